// ServerConfig.https: the HTTPS binding's limits, timeouts and batching. Unset fields keep
// the library's defaults; a bad value is refused when the server starts, as an
// InvalidArgument naming `https.<field>`.

import DMDelegate
import Foundation
import XCTest

final class HttpsSettingsTests: XCTestCase {
    /// One request in flight per peer, batches of up to 8 messages: three delegations at
    /// once share that one request's slot, and all complete.
    func testExplicitSettingsCompleteDelegations() async throws {
        let devices = try (0..<3).map { try Example.device("IMEI:49015420323780\($0)") }
        let https = HttpsSettings(
            connectTimeoutMs: 2_000, attempts: 2, maxRequestsPerPeer: 1, maxBatchMessages: 8)
        let servers = try await TwoServers.start(devices: devices, https: https)
        defer { servers.close() }

        let sessions = try await withThrowingTaskGroup(of: (Session, Session).self) { group in
            for device in devices {
                group.addTask {
                    let id = try await servers.dms1.startDelegation(
                        request: Example.request(
                            to: Example.dms2, method: 1, .partial, device: device.device()))
                    return (
                        try await servers.dms1.waitEnd(id), try await servers.dms2.waitEnd(id)
                    )
                }
            }
            var all: [(Session, Session)] = []
            for try await pair in group { all.append(pair) }
            return all
        }
        XCTAssertEqual(sessions.count, devices.count)
        for (atDms1, atDms2) in sessions {
            XCTAssertEqual(atDms1.state, .completed, "\(atDms1)")
            XCTAssertEqual(atDms2.state, .completed, "\(atDms2)")
        }
        for device in devices {
            XCTAssertFalse(device.accountsOf(serverId: Example.dms2).isEmpty)
        }
    }

    /// `maxBatchMessages` 1 turns batching off both ways; delegations still complete.
    func testBatchingOffCompletesADelegation() async throws {
        let device = try Example.device()
        let servers = try await TwoServers.start(
            devices: [device],
            https: HttpsSettings(maxUnbatchedRequestsPerPeer: 4, maxBatchMessages: 1))
        defer { servers.close() }
        let id = try await servers.dms2.startDelegation(
            request: Example.request(to: Example.dms1, method: 2, .full, device: device.device()))
        let atDms1 = try await servers.dms1.waitEnd(id)
        let atDms2 = try await servers.dms2.waitEnd(id)
        XCTAssertEqual(atDms1.state, .completed, "\(atDms1)")
        XCTAssertEqual(atDms2.state, .completed, "\(atDms2)")
    }

    func testTheRecordsDefaultsAreTheLibrarys() {
        let d = HttpsSettings()
        XCTAssertEqual(d.maxBodyBytes, 262_144)
        XCTAssertEqual(d.connectTimeoutMs, 5_000)
        XCTAssertEqual(d.requestTimeoutMs, 30_000)
        XCTAssertEqual(d.handshakeTimeoutMs, 10_000)
        XCTAssertEqual(d.backoffMs, 200)
        XCTAssertEqual(d.attempts, 4)
        XCTAssertEqual(d.maxRequestsPerPeer, 2)
        XCTAssertEqual(d.maxUnbatchedRequestsPerPeer, 32)
        XCTAssertEqual(d.maxBatchMessages, 64)
        XCTAssertEqual(d.maxBatchBytes, 131_072)
    }

    /// A body cap too small for a message, a zero duration or count: refused at start.
    func testBadSettingsAreInvalidArguments() async throws {
        ignoreSigpipe()
        let pki = try TestPki(name: "dmdelegate Swift tests CA")
        let host = SimHost(serverId: Example.dms1, devices: [])
        let cases: [(HttpsSettings, String)] = [
            (HttpsSettings(maxBodyBytes: 100), "https.max_body_bytes"),
            (HttpsSettings(connectTimeoutMs: 0), "https.connect_timeout"),
            (HttpsSettings(attempts: 0), "https.attempts"),
            (HttpsSettings(maxBatchMessages: 0), "https.max_batch_messages"),
        ]
        for (https, field) in cases {
            let config = try TwoServers.config(Example.dms1, pki: pki, https: https)
            let error = await assertThrows(
                try await DelegationServer.start(config: config, host: host)
            ) {
                if case .InvalidArgument(field: field, _) = $0 { true } else { false }
            }
            if field == "https.max_body_bytes", case .InvalidArgument(_, let reason)? = error {
                XCTAssertTrue(reason.contains("100"), reason)
            }
        }
    }
}
