package org.dmdelegate

import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/**
 * `ServerConfig.deviceHub`: the server reaches networked devices over its own SyncML DM
 * endpoint, and the host keeps policy, accounts and events. (Delegations through hubs
 * across processes and languages run in the interop matrix, `interop/`.)
 */
@Timeout(60)
class DeviceHubTest {
    /** Nothing listens on the discard port: a notification sent there fails at once. */
    private val unreachable = "http://127.0.0.1:9/notify"

    private fun link(deviceId: String = "IMEI:490154203237518", notifyUrl: String = unreachable) =
        DeviceLink(
            deviceId = deviceId,
            notifyUrl = notifyUrl,
            clientSecret = "client-1",
            serverSecret = "server-1",
            scheme = DeviceAuthScheme.BASIC,
        )

    private fun hubConfig(serverId: String, identity: Identity, vararg links: DeviceLink) =
        serverConfig(serverId, identity, Timeouts(5000u, 5000u, 5000u, 5000u, 5000u))
            .copy(deviceHub = DeviceHub(devices = links.toList()))

    @Test
    fun `a hub listens on its own port and takes more devices`() = runBlocking<Unit> {
        DelegationServer.start(hubConfig(DMS1, TestCerts.dms1, link()), DeviceHost(DMS1)).use { server ->
            val url = assertNotNull(server.deviceHubUrl())
            assertTrue(url.matches(Regex("""http://127\.0\.0\.1:[1-9][0-9]*/dm""")), url)
            server.addDevice(link("IMEI:1"))
            val e = assertFailsWith<DelegationException.InvalidArgument> { server.addDevice(link(deviceId = "")) }
            assertEquals("deviceId", e.field)
        }
    }

    @Test
    fun `without a hub there is no url and no device to add`() = runBlocking<Unit> {
        DelegationServer.start(serverConfig(DMS1, TestCerts.dms1), DeviceHost(DMS1)).use { server ->
            assertNull(server.deviceHubUrl())
            assertFailsWith<DelegationException.InvalidState> { server.addDevice(link()) }
        }
    }

    @Test
    fun `a notify url that is not http is refused before the server starts`() = runBlocking<Unit> {
        val e = assertFailsWith<DelegationException.InvalidArgument> {
            DelegationServer.start(hubConfig(DMS1, TestCerts.dms1, link(notifyUrl = "ftp://x/notify")), DeviceHost(DMS1))
        }
        assertEquals("notifyUrl", e.field)
    }

    @Test
    fun `with a hub the host's execute is never called`() = runBlocking<Unit> {
        val device = newDevice()
        val before = device.dump()
        var executed = 0
        val host1 = object : DeviceHost(DMS1, device) {
            override fun execute(device: Device, command: Command): String? {
                executed++
                return super.execute(device, command)
            }
        }
        val host2 = DeviceHost(DMS2, device)
        val dms1 = DelegationServer.start(hubConfig(DMS1, TestCerts.dms1, link()), host1)
        val dms2 = DelegationServer.start(hubConfig(DMS2, TestCerts.dms2, link()), host2)
        Servers(dms1, dms2).use { servers ->
            dms1.setPeers(listOf(Peer(serverId = DMS2, endpoint = dms2.endpointUrl(DMS2), address = "127.0.0.1:${dms2.localPort()}")))
            dms2.setPeers(listOf(Peer(serverId = DMS1, endpoint = dms1.endpointUrl(DMS1), address = "127.0.0.1:${dms1.localPort()}")))
            val outcome = servers.delegate(1, DelegationType.FULL, device.device())
            // DMS-1's hub cannot reach the device: the first command failed there.
            assertEquals(SessionState.ROLLED_BACK, outcome.atDms1.state)
            assertEquals(0, executed)
            assertEquals(before, device.dump())
            assertEquals(1, host2.offers.size) // DMS-2's host still decided
        }
    }
}
