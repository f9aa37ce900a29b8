// What the tests share: the names of the example deployment, a DelegationHost over
// simulated devices, and two DelegationServers talking HTTPS with mutual TLS on 127.0.0.1.

import DMDelegate
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - The example deployment

/// DMS-1 (the operator's DM Server, holds the device) and DMS-2 (the enterprise's).
enum Example {
    static let dms1 = "dms1.operator.example"
    static let dms2 = "dms2.enterprise.example"
    static let dms1Url = "https://dms1.operator.example/dm"
    static let dms2Url = "https://dms2.enterprise.example/dm"
    /// Where DMS-2's Bootstrap Server gives devices their DMS-2 account (Methods 3/4).
    static let bootstrapUrl = "https://bootstrap.enterprise.example/bs"

    /// A device with the sample DM Tree, owned by DMS-1 (its account is installed).
    static func device(_ id: String = "IMEI:490154203237518") throws -> SimDevice {
        try SimDevice(
            device: Device(deviceId: id, manufacturer: "Acme", model: "Phone X"),
            ownerServerId: dms1, ownerUrl: dms1Url,
            clientSecret: "client-secret-1", serverSecret: "server-secret-1")
    }

    /// The DM account DMS-2 gives devices (what its host's `dmAccount` returns, and what
    /// its Bootstrap Server hands out).
    static func dms2Account() throws -> String {
        try simpleDmaccTnds(
            serverId: dms2, url: dms2Url, clientSecret: "client-secret-2",
            serverSecret: "server-secret-2")
    }

    /// A request for `device`: Full delegates the whole tree (read rights; DMS-2 takes
    /// over everything DMS-1 held), Partial the apps subtree.
    static func request(
        to peer: String, method: UInt8, _ type: DelegationType, device: Device
    ) -> DelegationRequest {
        let subtree =
            type == .full
            ? Subtree(uri: ".", rights: "Get")
            : Subtree(uri: "./Vendor/Apps", rights: "Add+Get+Replace")
        return DelegationRequest(
            peer: peer, method: method, delegationType: type, device: device,
            subtrees: [subtree])
    }
}

/// An error that is not a `DelegationError`: the library sees it as an internal failure
/// of the host (reason 199).
struct HostBug: Error, CustomStringConvertible {
    let description: String
}

// MARK: - A host over simulated devices

/// A DM Server's side of the library: a `DelegationHost` that forwards to `SimDevice`s
/// (as a real host would run the commands in its DM sessions with the devices), can be told
/// to misbehave, and records what it was asked.
///
/// The library calls it on its own threads, for several sessions at once: every mutable
/// field is guarded by `lock`, which is never held while calling into the library. That is
/// what makes the `@unchecked Sendable` promise true.
final class SimHost: DelegationHost, @unchecked Sendable {
    /// What the host does when asked (set it before starting a delegation).
    struct Behaviour: Sendable {
        /// `acceptDelegation`'s answer.
        var answer: PolicyAnswer = .accept
        /// `execute` refuses the n-th write (Add, ReplaceAcl, Delete; from 1) with status 425.
        var refuseWrite: Int?
        /// `execute` throws this on the n-th write instead.
        var writeError: (n: Int, error: any Error & Sendable)?
        /// `openDmSession` throws this.
        var openSessionError: (any Error & Sendable)?
    }

    /// What the host was asked.
    struct Record: Sendable {
        var offers: [Offer] = []
        var events: [DelegationEvent] = []
        var reads = 0, writes = 0, opens = 0, accounts = 0, urls = 0

        /// The events of one kind, e.g. `count { if case .completed = $0 { true } else { false } }`.
        func count(_ kind: (EventKind) -> Bool) -> Int { events.filter { kind($0.kind) }.count }
        var completed: Int { count { if case .completed = $0 { true } else { false } } }
        var failed: Int { count { if case .failed = $0 { true } else { false } } }
        var rolledBack: Int { count { if case .rolledBack = $0 { true } else { false } } }
        var rejected: Int { count { if case .rejected = $0 { true } else { false } } }
    }

    let serverId: String
    private let lock = NSLock()
    private var devices: [String: SimDevice] = [:]
    private var behaviourValue = Behaviour()
    private var recordValue = Record()

    init(serverId: String, devices: [SimDevice]) {
        self.serverId = serverId
        for d in devices { self.devices[d.device().deviceId] = d }
    }

    var behaviour: Behaviour {
        get { lock.withLock { behaviourValue } }
        set { lock.withLock { behaviourValue = newValue } }
    }

    /// A copy of what was recorded so far.
    var record: Record { lock.withLock { recordValue } }

    private func simDevice(_ device: Device) throws -> SimDevice {
        guard let d = lock.withLock({ devices[device.deviceId] }) else {
            throw DelegationError.Device(status: 404, message: "unknown device \(device.deviceId)")
        }
        return d
    }

    // MARK: DelegationHost

    func acceptDelegation(offer: Offer) throws -> PolicyAnswer {
        lock.withLock {
            recordValue.offers.append(offer)
            return behaviourValue.answer
        }
    }

    func execute(device: Device, command: Command) throws -> String? {
        let target = try simDevice(device)
        let (n, b): (Int?, Behaviour) = lock.withLock {
            switch command.kind {
            case .add, .replaceAcl, .delete:
                recordValue.writes += 1
                return (recordValue.writes, behaviourValue)
            case .getTree, .getAcl:
                recordValue.reads += 1
                return (nil, behaviourValue)
            }
        }
        if let n {
            if n == b.refuseWrite {
                throw DelegationError.Device(status: 425, message: "write \(n) refused (test)")
            }
            if let w = b.writeError, w.n == n { throw w.error }
        }
        // The device enforces its ACLs against this server's identity.
        return try target.execute(serverId: serverId, command: command)
    }

    func openDmSession(session: Session) throws {
        let b = lock.withLock {
            recordValue.opens += 1
            return behaviourValue
        }
        if let error = b.openSessionError { throw error }
        try simDevice(session.device).openSession(serverId: serverId)
    }

    func dmAccount(device: Device) throws -> String {
        lock.withLock { recordValue.accounts += 1 }
        return try Example.dms2Account()
    }

    func bootstrapServerUrl(device: Device) throws -> String {
        lock.withLock { recordValue.urls += 1 }
        return Example.bootstrapUrl
    }

    func onEvent(event: DelegationEvent) {
        // Must return at once: only record it.
        lock.withLock { recordValue.events.append(event) }
    }
}

// MARK: - Two servers

/// DMS-1 and DMS-2 in this process, each with its `SimHost`, on 127.0.0.1 with any free
/// port, certificates from one test CA, each the other's peer.
final class TwoServers: Sendable {
    let dms1: DelegationServer
    let dms2: DelegationServer
    let host1: SimHost
    let host2: SimHost

    private init(dms1: DelegationServer, dms2: DelegationServer, host1: SimHost, host2: SimHost) {
        self.dms1 = dms1
        self.dms2 = dms2
        self.host1 = host1
        self.host2 = host2
    }

    /// The configuration of a server whose certificate carries `serverId`; peers come later.
    static func config(
        _ serverId: String, pki: TestPki, timeouts: Timeouts? = nil, https: HttpsSettings? = nil
    ) throws -> ServerConfig {
        let identity = try pki.issue(serverId: serverId)
        return ServerConfig(
            serverId: serverId, listenAddress: "127.0.0.1:0",
            certPem: identity.certPem, keyPem: identity.keyPem, trustPem: pki.caPem(),
            timeouts: timeouts, https: https)
    }

    /// Starts both servers, then introduces them to each other: a server's endpoint is
    /// known once it listens, so peers are set after both started.
    /// `timeouts`: both servers' deadlines, `https`: both servers' HTTPS settings (the
    /// defaults when nil).
    static func start(
        devices: [SimDevice], timeouts: Timeouts? = nil, https: HttpsSettings? = nil
    ) async throws -> TwoServers {
        ignoreSigpipe()
        let pki = try TestPki(name: "dmdelegate Swift tests CA")
        let host1 = SimHost(serverId: Example.dms1, devices: devices)
        let host2 = SimHost(serverId: Example.dms2, devices: devices)
        let dms1 = try await DelegationServer.start(
            config: config(Example.dms1, pki: pki, timeouts: timeouts, https: https), host: host1)
        let dms2 = try await DelegationServer.start(
            config: config(Example.dms2, pki: pki, timeouts: timeouts, https: https), host: host2)
        try dms1.setPeers(peers: [peer(dms2)])
        try dms2.setPeers(peers: [peer(dms1)])
        return TwoServers(dms1: dms1, dms2: dms2, host1: host1, host2: host2)
    }

    /// `server` as a peer: its endpoint URL names its ServerID (checked against its
    /// certificate), the connection goes to 127.0.0.1.
    static func peer(_ server: DelegationServer) -> Peer {
        Peer(
            serverId: server.serverId(),
            endpoint: server.endpointUrl(host: server.serverId()),
            address: "127.0.0.1:\(server.localPort())")
    }

    func close() {
        dms1.close()
        dms2.close()
    }
}

/// The library writes to sockets whose peer may have closed them; like a C program, a
/// Swift process must not die of SIGPIPE (Rust programs and the JVM ignore it already).
func ignoreSigpipe() {
    _ = signal(SIGPIPE, SIG_IGN)
}

// MARK: - Assertions

extension DelegationServer {
    /// The session once it ended (the tests' deadline: one minute).
    func waitEnd(_ sessionId: String) async throws -> Session {
        let session = try await wait(sessionId: sessionId, timeoutMs: 60_000)
        XCTAssertTrue(session.terminal, "\(serverId()): \(session.state) is not terminal")
        return session
    }

    /// Polls until the session is in `state` (at most `seconds`); returns the last one seen.
    func waitFor(_ state: SessionState, _ sessionId: String, seconds: Double = 30) async throws
        -> Session
    {
        let until = Date().addingTimeInterval(seconds)
        while true {
            let session = try await wait(sessionId: sessionId, timeoutMs: 0)
            if session.state == state || session.terminal || Date() > until { return session }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
    }
}

/// Fails unless `expression` throws a `DelegationError` that `matches`; returns the error.
@discardableResult
func assertThrows<T>(
    _ expression: @autoclosure () async throws -> T,
    file: StaticString = #filePath, line: UInt = #line,
    _ matches: (DelegationError) -> Bool
) async -> DelegationError? {
    do {
        let value = try await expression()
        XCTFail("no error thrown; returned \(value)", file: file, line: line)
    } catch let error as DelegationError {
        XCTAssertTrue(matches(error), "unexpected \(error)", file: file, line: line)
        return error
    } catch {
        XCTFail("not a DelegationError: \(error)", file: file, line: line)
    }
    return nil
}

/// Fails when the device's dump differs from `before`, showing where.
func assertUnchanged(
    _ device: SimDevice, since before: String, file: StaticString = #filePath, line: UInt = #line
) {
    let now = device.dump()
    guard now != before else { return }
    let common = zip(before, now).prefix { $0 == $1 }.count
    let from = max(0, common - 80)
    XCTFail(
        "the device changed at character \(common): before …\(before.dropFirst(from).prefix(160))…, "
            + "now …\(now.dropFirst(from).prefix(160))…", file: file, line: line)
}
