// Client Authority Delegation end to end, in Swift: DMS-1 and DMS-2 are two
// DelegationServers in this process talking HTTPS with mutual TLS; their hosts (SimHost,
// Harness.swift) forward to simulated devices. Each test reads as an example of the API.

import DMDelegate
import Foundation
import XCTest

/// Methods 1–4 × Full/Partial: both servers complete and the device ends up managed by
/// DMS-2 (Full: only by DMS-2; Partial: DMS-1 keeps its account and the rest of the tree).
final class MethodTests: XCTestCase {
    func testMethod1Full() async throws { try await delegate(method: 1, .full) }
    func testMethod1Partial() async throws { try await delegate(method: 1, .partial) }
    func testMethod2Full() async throws { try await delegate(method: 2, .full) }
    func testMethod2Partial() async throws { try await delegate(method: 2, .partial) }
    func testMethod3Full() async throws { try await delegate(method: 3, .full) }
    func testMethod3Partial() async throws { try await delegate(method: 3, .partial) }
    func testMethod4Full() async throws { try await delegate(method: 4, .full) }
    func testMethod4Partial() async throws { try await delegate(method: 4, .partial) }

    private func delegate(
        method: UInt8, _ type: DelegationType, file: StaticString = #filePath, line: UInt = #line
    ) async throws {
        let device = try Example.device()
        let servers = try await TwoServers.start(devices: [device])
        defer { servers.close() }

        // Methods 3/4: the device gets DMS-2's account from DMS-2's Bootstrap Server, at
        // the URL DMS-2's host names; the simulated device then opens its first session
        // with DMS-2 by itself, as a real one would.
        let bootstrapping = method >= 3
        if bootstrapping {
            let bootstrap = SimBootstrapServer()
            try bootstrap.register(url: Example.bootstrapUrl, dmaccTnds: Example.dms2Account())
            device.routeBootstrap(bootstrap: bootstrap, dms2: servers.dms2)
        }
        XCTAssertEqual(device.accountsOf(serverId: Example.dms2), [])

        // Methods 1 and 3: DMS-1 initiates; 2 and 4: DMS-2 does. The session id is the
        // same at both servers.
        let dms1Starts = method == 1 || method == 3
        let request = Example.request(
            to: dms1Starts ? Example.dms2 : Example.dms1, method: method, type,
            device: device.device())
        let initiator = dms1Starts ? servers.dms1 : servers.dms2
        let sessionId = try await initiator.startDelegation(request: request)

        let atDms1 = try await servers.dms1.waitEnd(sessionId)
        let atDms2 = try await servers.dms2.waitEnd(sessionId)
        for session in [atDms1, atDms2] {
            XCTAssertEqual(session.state, .completed, "\(session)", file: file, line: line)
            XCTAssertEqual(session.method, method, file: file, line: line)
            XCTAssertEqual(session.delegationType, type, file: file, line: line)
            XCTAssertNil(session.reasonCode, file: file, line: line)
            XCTAssertEqual(session.pendingOperations, 0, file: file, line: line)
            XCTAssertEqual(session.subtrees, request.subtrees, file: file, line: line)
        }
        XCTAssertEqual(atDms1.role, .delegating, file: file, line: line)
        XCTAssertEqual(atDms2.role, .delegated, file: file, line: line)
        XCTAssertEqual(atDms1.peer, Example.dms2, file: file, line: line)
        XCTAssertEqual(atDms2.peer, Example.dms1, file: file, line: line)

        // What each host was asked: the responder's policy once; DMS-1 worked the device;
        // DMS-2 gave its account, and either opened a DM session (1/2) or named its
        // Bootstrap Server (3/4).
        let host1 = servers.host1.record, host2 = servers.host2.record
        let responder = dms1Starts ? host2 : host1
        XCTAssertEqual(responder.offers.count, 1, file: file, line: line)
        XCTAssertEqual(responder.offers.first?.role, dms1Starts ? .delegated : .delegating)
        XCTAssertEqual(responder.offers.first?.subtrees, request.subtrees, file: file, line: line)
        XCTAssertEqual((dms1Starts ? host1 : host2).offers.count, 0, file: file, line: line)
        XCTAssertGreaterThan(host1.reads, 0, file: file, line: line)
        XCTAssertGreaterThan(host1.writes, 0, file: file, line: line)
        XCTAssertEqual(host2.reads + host2.writes, 0, file: file, line: line)
        XCTAssertEqual(host2.accounts, 1, file: file, line: line)
        XCTAssertEqual(host2.opens, bootstrapping ? 0 : 1, file: file, line: line)
        XCTAssertEqual(host2.urls, bootstrapping ? 1 : 0, file: file, line: line)
        XCTAssertEqual(host1.completed, 1, file: file, line: line)
        XCTAssertEqual(host2.completed, 1, file: file, line: line)
        XCTAssertEqual(host1.failed + host2.failed, 0, file: file, line: line)

        // The device: DMS-2 has an account and rights where DMS-1 delegated them.
        XCTAssertFalse(device.accountsOf(serverId: Example.dms2).isEmpty, file: file, line: line)
        switch type {
        case .full:
            // DMS-1 is gone: no account, and what it held DMS-2 holds.
            XCTAssertEqual(device.accountsOf(serverId: Example.dms1), [], file: file, line: line)
            for uri in ["./Vendor", "./Network"] {
                let acl = device.aclOf(uri: uri) ?? ""
                XCTAssertTrue(acl.contains("Replace=\(Example.dms2)"), "\(uri): \(acl)", file: file, line: line)
                XCTAssertFalse(acl.contains(Example.dms1), "\(uri): \(acl)", file: file, line: line)
            }
        case .partial:
            // DMS-1 stays; both hold the apps subtree; the rest stays DMS-1's alone.
            XCTAssertFalse(device.accountsOf(serverId: Example.dms1).isEmpty, file: file, line: line)
            let apps = device.aclOf(uri: "./Vendor/Apps") ?? ""
            XCTAssertTrue(apps.contains("Get=\(Example.dms1)+\(Example.dms2)"), apps, file: file, line: line)
            let network = device.aclOf(uri: "./Network") ?? ""
            XCTAssertFalse(network.contains(Example.dms2), network, file: file, line: line)
        }
        // The helpers of the protocol (marker, bootstrap trigger) are gone.
        let dump = device.dump()
        XCTAssertFalse(dump.contains("NoAutoSession"), file: file, line: line)
        XCTAssertFalse(dump.contains("<NodeName>DMDelegate</NodeName>"), file: file, line: line)

        // Each server keeps the session.
        let listed1 = try await servers.dms1.sessions(), listed2 = try await servers.dms2.sessions()
        XCTAssertEqual(listed1.map(\.sessionId), [sessionId], file: file, line: line)
        XCTAssertEqual(listed2.map(\.sessionId), [sessionId], file: file, line: line)
        let again = try await servers.dms1.session(sessionId: sessionId)
        XCTAssertEqual(again.state, .completed, file: file, line: line)
    }
}

/// What goes wrong: every failure after DMS-1 touched the device rolls back, at both
/// servers, and leaves the device as it was.
final class FailureTests: XCTestCase {
    /// DMS-1's host reports a device refusal (`DelegationError.Device`, SyncML status 425)
    /// for its third write: reason 130 (client operation failed), everything undone.
    func testARefusedWriteRollsBackBothServers() async throws {
        let device = try Example.device()
        let servers = try await TwoServers.start(devices: [device])
        defer { servers.close() }
        servers.host1.behaviour.refuseWrite = 3
        let before = device.dump()

        let sessionId = try await servers.dms1.startDelegation(
            request: Example.request(
                to: Example.dms2, method: 1, .full, device: device.device()))

        let atDms1 = try await servers.dms1.waitEnd(sessionId)
        let atDms2 = try await servers.dms2.waitEnd(sessionId)
        for session in [atDms1, atDms2] {
            XCTAssertEqual(session.state, .rolledBack, "\(session)")
            XCTAssertEqual(session.reasonCode, 130)
            XCTAssertEqual(session.pendingOperations, 0)
        }
        XCTAssertTrue(atDms1.reasonText?.contains("425") ?? false, "\(atDms1)")
        assertUnchanged(device, since: before)
        let host1 = servers.host1.record, host2 = servers.host2.record
        XCTAssertGreaterThan(host1.writes, 3, "the rollback wrote the inverses of writes 1, 2")
        XCTAssertEqual(host1.failed, 1)
        XCTAssertEqual(host1.rolledBack, 1)
        XCTAssertEqual(host2.rolledBack, 1)
        XCTAssertEqual(host1.completed + host2.completed, 0)
        XCTAssertEqual(host2.opens, 0)

        // An ended session can neither be cancelled nor rolled back again.
        await assertThrows(try await servers.dms1.cancel(sessionId: sessionId)) {
            if case .InvalidState = $0 { true } else { false }
        }
        await assertThrows(try await servers.dms1.retryRollback(sessionId: sessionId)) {
            if case .InvalidState = $0 { true } else { false }
        }
    }

    /// A callback that throws some other Swift error is an internal failure of the host:
    /// reason 199. Here DMS-2's `openDmSession` fails after DMS-1 prepared the device.
    func testASwiftErrorFromACallbackIsReason199() async throws {
        let device = try Example.device()
        let servers = try await TwoServers.start(devices: [device])
        defer { servers.close() }
        servers.host2.behaviour.openSessionError = HostBug(description: "the DM session broke")
        let before = device.dump()

        let sessionId = try await servers.dms1.startDelegation(
            request: Example.request(
                to: Example.dms2, method: 1, .partial, device: device.device()))

        let atDms1 = try await servers.dms1.waitEnd(sessionId)
        let atDms2 = try await servers.dms2.waitEnd(sessionId)
        for session in [atDms1, atDms2] {
            XCTAssertEqual(session.state, .rolledBack, "\(session)")
            XCTAssertEqual(session.reasonCode, 199)
        }
        XCTAssertTrue(atDms2.reasonText?.contains("the DM session broke") ?? false, "\(atDms2)")
        XCTAssertGreaterThan(servers.host1.record.writes, 0, "DMS-1 had prepared the device")
        assertUnchanged(device, since: before)
    }

    /// From `execute`, any error but `DelegationError.Device` is a failed device
    /// operation (status 500): the delegation rolls back the same way.
    func testASwiftErrorFromExecuteRollsBack() async throws {
        let device = try Example.device()
        let servers = try await TwoServers.start(devices: [device])
        defer { servers.close() }
        servers.host1.behaviour.writeError = (2, HostBug(description: "lost the DM session"))
        let before = device.dump()

        let sessionId = try await servers.dms1.startDelegation(
            request: Example.request(
                to: Example.dms2, method: 1, .full, device: device.device()))

        let atDms1 = try await servers.dms1.waitEnd(sessionId)
        let atDms2 = try await servers.dms2.waitEnd(sessionId)
        XCTAssertEqual(atDms1.state, .rolledBack, "\(atDms1)")
        XCTAssertEqual(atDms2.state, .rolledBack, "\(atDms2)")
        XCTAssertTrue(atDms1.reasonText?.contains("lost the DM session") ?? false, "\(atDms1)")
        assertUnchanged(device, since: before)
    }

    /// The responder's policy refuses (`PolicyAnswer.reject`): both sessions end Rejected
    /// with its code, and nothing was done to the device.
    func testMethod1RejectedByDms2sPolicy() async throws {
        try await rejected(method: 1, code: 101)
    }

    func testMethod2RejectedByDms1sPolicy() async throws {
        try await rejected(method: 2, code: 104)
    }

    private func rejected(method: UInt8, code: UInt16) async throws {
        let device = try Example.device()
        let servers = try await TwoServers.start(devices: [device])
        defer { servers.close() }
        let dms1Starts = method == 1
        let responder = dms1Starts ? servers.host2 : servers.host1
        responder.behaviour.answer = .reject(reasonCode: code, reasonText: "not this device")
        let before = device.dump()

        let sessionId = try await (dms1Starts ? servers.dms1 : servers.dms2).startDelegation(
            request: Example.request(
                to: dms1Starts ? Example.dms2 : Example.dms1, method: method, .partial,
                device: device.device()))

        for server in [servers.dms1, servers.dms2] {
            let session = try await server.waitEnd(sessionId)
            XCTAssertEqual(session.state, .rejected, "\(session)")
            XCTAssertEqual(session.reasonCode, code)
            XCTAssertTrue(session.reasonText?.contains("not this device") ?? false, "\(session)")
        }
        assertUnchanged(device, since: before)
        let host1 = servers.host1.record, host2 = servers.host2.record
        XCTAssertEqual(responder.record.offers.count, 1)
        XCTAssertEqual(host1.reads + host1.writes, 0)
        XCTAssertEqual(host2.accounts + host2.opens, 0)
        XCTAssertEqual(host1.rejected, 1)
        XCTAssertEqual(host2.rejected, 1)
    }

    /// `cancel` stops an unfinished delegation: here Method 3 waits for a device that never
    /// bootstraps (nothing routes it). DMS-1 rolls back and tells DMS-2.
    func testCancelRollsBackAnUnfinishedDelegation() async throws {
        let device = try Example.device()
        let servers = try await TwoServers.start(devices: [device])
        defer { servers.close() }
        let before = device.dump()

        let sessionId = try await servers.dms1.startDelegation(
            request: Example.request(
                to: Example.dms2, method: 3, .partial, device: device.device()))
        let waiting = try await servers.dms1.waitFor(.awaitingConfirm, sessionId)
        XCTAssertEqual(waiting.state, .awaitingConfirm)
        XCTAssertFalse(waiting.terminal)
        XCTAssertNotNil(waiting.deadlineMs)
        XCTAssertNotEqual(device.dump(), before, "DMS-1 prepared the device")
        let atDms2 = try await servers.dms2.waitFor(.awaitingClient, sessionId)
        XCTAssertEqual(atDms2.state, .awaitingClient)

        let cancelled = try await servers.dms1.cancel(sessionId: sessionId)
        XCTAssertEqual(cancelled.state, .rolledBack)
        XCTAssertEqual(cancelled.reasonCode, 150)
        let peer = try await servers.dms2.waitEnd(sessionId)
        XCTAssertEqual(peer.state, .rolledBack)
        XCTAssertEqual(peer.reasonCode, 150)
        assertUnchanged(device, since: before)
    }
}

/// Bad input is refused at once with the `DelegationError` case that says why.
final class ArgumentTests: XCTestCase {
    func testBadRequestsAreRefused() async throws {
        let device = try Example.device()
        let servers = try await TwoServers.start(devices: [device])
        defer { servers.close() }
        let good = Example.request(to: Example.dms2, method: 1, .partial, device: device.device())

        var request = good
        request.method = 5
        await assertThrows(try await servers.dms1.startDelegation(request: request)) {
            if case .InvalidArgument(field: "method", _) = $0 { true } else { false }
        }
        request = good
        request.subtrees = [Subtree(uri: "./Vendor/Apps", rights: "Get+Fly")]
        await assertThrows(try await servers.dms1.startDelegation(request: request)) {
            if case .InvalidArgument(field: "subtrees[].rights", _) = $0 { true } else { false }
        }
        request = good
        request.expiresMs = -1
        await assertThrows(try await servers.dms1.startDelegation(request: request)) {
            if case .InvalidArgument(field: "expiresMs", _) = $0 { true } else { false }
        }
        // Nothing was started.
        let sessions = try await servers.dms1.sessions()
        XCTAssertEqual(sessions, [])

        // A peer that is not configured is refused before any session exists.
        request = good
        request.peer = "nobody.example"
        await assertThrows(try await servers.dms1.startDelegation(request: request)) {
            if case .InvalidArgument(field: "peer", _) = $0 { true } else { false }
        }
        let after = try await servers.dms1.sessions()
        XCTAssertEqual(after, [])
        XCTAssertEqual(servers.host2.record.offers.count, 0)
    }

    func testUnknownSessionsAndPeersSetTwice() async throws {
        let servers = try await TwoServers.start(devices: [])
        defer { servers.close() }
        await assertThrows(try await servers.dms1.session(sessionId: "no-such-session")) {
            if case .UnknownSession(sessionId: "no-such-session") = $0 { true } else { false }
        }
        await assertThrows(try await servers.dms1.wait(sessionId: "no-such-session", timeoutMs: 0)) {
            if case .UnknownSession = $0 { true } else { false }
        }
        await assertThrows(try await servers.dms1.cancel(sessionId: "no-such-session")) {
            if case .UnknownSession = $0 { true } else { false }
        }
        await assertThrows(try servers.dms1.setPeers(peers: [])) {
            if case .InvalidState = $0 { true } else { false }
        }
    }

    func testBadConfigurationsAreRefused() async throws {
        let pki = try TestPki(name: "dmdelegate Swift tests CA")
        let host = SimHost(serverId: Example.dms1, devices: [])
        let good = try TwoServers.config(Example.dms1, pki: pki)

        var config = good
        config.listenAddress = "nowhere"
        await assertThrows(try await DelegationServer.start(config: config, host: host)) {
            if case .InvalidArgument(field: "listenAddress", _) = $0 { true } else { false }
        }
        config = good
        config.certPem = "not PEM"
        await assertThrows(try await DelegationServer.start(config: config, host: host)) {
            if case .InvalidArgument = $0 { true } else { false }
        }
        config = good
        config.serverId = "not a server id!"
        await assertThrows(try await DelegationServer.start(config: config, host: host)) {
            if case .InvalidArgument = $0 { true } else { false }
        }

        let server = try await DelegationServer.start(config: good, host: host)
        defer { server.close() }
        let peer = Peer(serverId: Example.dms2, endpoint: "https://dms2.enterprise.example/x",
                        address: "not an address")
        await assertThrows(try server.setPeers(peers: [peer])) {
            if case .InvalidArgument(field: "peers[].address", _) = $0 { true } else { false }
        }
    }

    func testHelpersRefuseBadDocuments() async throws {
        await assertThrows(
            try simpleDmaccTnds(
                serverId: "bad id!", url: "https://x.example/dm", clientSecret: "c",
                serverSecret: "s")
        ) {
            if case .Decode = $0 { true } else { false }
        }
        await assertThrows(
            try SimBootstrapServer().register(url: Example.bootstrapUrl, dmaccTnds: "<MgmtTree>")
        ) {
            if case .Decode = $0 { true } else { false }
        }
        await assertThrows(try validateMessage(document: Data("<Other/>".utf8))) {
            if case .Decode = $0 { true } else { false }
        }
        XCTAssertEqual(reasonDescription(code: 199), "internal error")
        XCTAssertNil(reasonDescription(code: 5))
        XCTAssertFalse(version().isEmpty)
    }
}

/// One pair of servers, many devices, delegations at the same time; and closing.
final class ServerTests: XCTestCase {
    /// Four devices, one delegation each, all at once from a task group: the host's
    /// callbacks run concurrently on the library's threads (SimHost is thread-safe).
    func testSeveralDelegationsAtOnce() async throws {
        let devices = try (0..<4).map { try Example.device("IMEI:49015420323750\($0)") }
        let servers = try await TwoServers.start(devices: devices)
        defer { servers.close() }
        let bootstrap = SimBootstrapServer()
        try bootstrap.register(url: Example.bootstrapUrl, dmaccTnds: Example.dms2Account())

        let outcomes = try await withThrowingTaskGroup(
            of: (device: SimDevice, atDms1: Session, atDms2: Session).self
        ) { group in
            for (i, device) in devices.enumerated() {
                let method = UInt8(i + 1)  // one of each method
                let type: DelegationType = i % 2 == 0 ? .full : .partial
                if method >= 3 {
                    device.routeBootstrap(bootstrap: bootstrap, dms2: servers.dms2)
                }
                group.addTask {
                    let dms1Starts = method == 1 || method == 3
                    let request = Example.request(
                        to: dms1Starts ? Example.dms2 : Example.dms1, method: method, type,
                        device: device.device())
                    let initiator = dms1Starts ? servers.dms1 : servers.dms2
                    let id = try await initiator.startDelegation(request: request)
                    return (
                        device, try await servers.dms1.waitEnd(id),
                        try await servers.dms2.waitEnd(id)
                    )
                }
            }
            var all: [(device: SimDevice, atDms1: Session, atDms2: Session)] = []
            for try await outcome in group { all.append(outcome) }
            return all
        }

        XCTAssertEqual(outcomes.count, devices.count)
        for (device, atDms1, atDms2) in outcomes {
            XCTAssertEqual(atDms1.state, .completed, "\(atDms1)")
            XCTAssertEqual(atDms2.state, .completed, "\(atDms2)")
            XCTAssertEqual(atDms1.device, device.device())
            XCTAssertFalse(device.accountsOf(serverId: Example.dms2).isEmpty)
            XCTAssertEqual(
                device.accountsOf(serverId: Example.dms1).isEmpty,
                atDms1.delegationType == .full)
        }
        // `sessions()` lists every one, oldest first, finished ones included.
        let ids = Set(outcomes.map(\.atDms1.sessionId))
        let listed1 = try await servers.dms1.sessions()
        let listed2 = try await servers.dms2.sessions()
        XCTAssertEqual(Set(listed1.map(\.sessionId)), ids)
        XCTAssertEqual(Set(listed2.map(\.sessionId)), ids)
        XCTAssertEqual(listed1.map(\.createdMs), listed1.map(\.createdMs).sorted())
        XCTAssertTrue(listed1.allSatisfy { $0.terminal })
        XCTAssertEqual(servers.host1.record.completed, devices.count)
        XCTAssertEqual(servers.host2.record.completed, devices.count)
    }

    /// `close()` stops a server's endpoint and its open connections (idempotent); what it
    /// knows stays readable. A delegation it would start is refused (`InvalidState`); one
    /// a peer starts with it cannot reach it and rolls back with 170.
    func testClose() async throws {
        let device = try Example.device()
        // Short deadlines: the peer gives up on the closed server within seconds.
        let servers = try await TwoServers.start(
            devices: [device], timeouts: Timeouts(responseMs: 3_000))
        defer { servers.close() }
        let before = device.dump()

        servers.dms1.close()
        servers.dms1.close()
        let sessions = try await servers.dms1.sessions()
        XCTAssertEqual(sessions, [])
        XCTAssertEqual(servers.dms1.serverId(), Example.dms1)

        await assertThrows(
            try await servers.dms1.startDelegation(
                request: Example.request(
                    to: Example.dms2, method: 1, .full, device: device.device()))
        ) {
            if case .InvalidState = $0 { true } else { false }
        }

        let sessionId = try await servers.dms2.startDelegation(
            request: Example.request(to: Example.dms1, method: 2, .full, device: device.device()))
        let session = try await servers.dms2.waitEnd(sessionId)
        XCTAssertEqual(session.state, .rolledBack, "\(session)")
        // 170: peer unreachable (the closed server's connections were dropped too).
        XCTAssertEqual(session.reasonCode, 170, "\(session)")
        XCTAssertEqual(servers.host1.record.offers.count, 0)
        assertUnchanged(device, since: before)
    }
}
