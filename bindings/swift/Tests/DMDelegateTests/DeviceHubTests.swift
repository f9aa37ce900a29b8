import XCTest

@testable import DMDelegate

/// `ServerConfig.deviceHub`: the server's own SyncML DM endpoint for networked devices.
/// (Delegations through hubs across processes and languages run in `interop/`.)
final class DeviceHubTests: XCTestCase {
    /// Nothing listens on the discard port.
    let unreachable = "http://127.0.0.1:9/notify"

    func link(_ deviceId: String = "IMEI:490154203237518", notifyUrl: String? = nil) -> DeviceLink {
        DeviceLink(
            deviceId: deviceId, notifyUrl: notifyUrl ?? unreachable, clientSecret: "c1",
            serverSecret: "s1", scheme: .basic)
    }

    func testAHubListensOnItsOwnPortAndTakesMoreDevices() async throws {
        ignoreSigpipe()
        let pki = try TestPki(name: "dmdelegate Swift tests CA")
        var config = try TwoServers.config(Example.dms1, pki: pki)
        config.deviceHub = DeviceHub(listenAddress: "127.0.0.1:0", devices: [link()])
        let server = try await DelegationServer.start(
            config: config, host: SimHost(serverId: Example.dms1, devices: []))
        let url = try XCTUnwrap(server.deviceHubUrl())
        XCTAssertTrue(url.hasPrefix("http://127.0.0.1:") && url.hasSuffix("/dm"), url)
        XCTAssertFalse(url.contains(":0/"), url)
        try server.addDevice(link: link("IMEI:1"))
        await assertThrows(try server.addDevice(link: link(notifyUrl: "ftp://x/notify"))) {
            if case .InvalidArgument(field: "notifyUrl", _) = $0 { true } else { false }
        }
        server.close()
    }

    func testWithoutAHubThereIsNoUrlAndNoDeviceToAdd() async throws {
        ignoreSigpipe()
        let pki = try TestPki(name: "dmdelegate Swift tests CA")
        let server = try await DelegationServer.start(
            config: try TwoServers.config(Example.dms1, pki: pki),
            host: SimHost(serverId: Example.dms1, devices: []))
        XCTAssertNil(server.deviceHubUrl())
        await assertThrows(try server.addDevice(link: link())) {
            if case .InvalidState = $0 { true } else { false }
        }
        server.close()
    }
}
