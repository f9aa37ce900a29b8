package org.dmdelegate

import kotlin.test.assertContains
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/**
 * [ServerConfig.https]: the HTTPS binding's limits, timeouts and batching. Unset fields
 * keep the library's defaults; a bad value is refused when the server starts, as an
 * InvalidArgument naming `https.<field>`.
 */
@Timeout(60)
class HttpsSettingsTest {
    @Test
    fun `servers with explicit settings complete delegations`() = runBlocking<Unit> {
        val devices = (0 until 3).map { newDevice("49015420323770$it") }
        val host1 = DeviceHost(DMS1, *devices.toTypedArray())
        val host2 = DeviceHost(DMS2, *devices.toTypedArray())
        // One request in flight per peer, batches of up to 8 messages: three delegations
        // at once share that one request's slot.
        val https = HttpsSettings(
            maxRequestsPerPeer = 1uL,
            maxBatchMessages = 8uL,
            connectTimeoutMs = 2_000uL,
            attempts = 2u,
        )
        Servers.start(host1, host2, https = https).use { servers ->
            val outcomes = devices.map { device ->
                async { servers.delegate(1, DelegationType.PARTIAL, device.device()) }
            }.awaitAll()
            for (outcome in outcomes) {
                assertEquals(SessionState.COMPLETED to SessionState.COMPLETED, outcome.states, "${outcome.atDms1}")
            }
            devices.forEach { assertTrue(it.accountsOf(DMS2).isNotEmpty()) }
        }
    }

    @Test
    fun `batching turned off still completes a delegation`() = runBlocking<Unit> {
        val device = newDevice()
        val https = HttpsSettings(maxBatchMessages = 1uL, maxUnbatchedRequestsPerPeer = 4uL)
        Servers.start(DeviceHost(DMS1, device), DeviceHost(DMS2, device), https = https).use { servers ->
            val outcome = servers.delegate(2, DelegationType.FULL, device.device())
            assertEquals(SessionState.COMPLETED to SessionState.COMPLETED, outcome.states, "${outcome.atDms1}")
        }
    }

    @Test
    fun `the record's defaults are the library's`() {
        val d = HttpsSettings()
        assertEquals(262_144uL, d.maxBodyBytes)
        assertEquals(5_000uL, d.connectTimeoutMs)
        assertEquals(30_000uL, d.requestTimeoutMs)
        assertEquals(10_000uL, d.handshakeTimeoutMs)
        assertEquals(200uL, d.backoffMs)
        assertEquals(4u, d.attempts)
        assertEquals(2uL, d.maxRequestsPerPeer)
        assertEquals(32uL, d.maxUnbatchedRequestsPerPeer)
        assertEquals(64uL, d.maxBatchMessages)
        assertEquals(131_072uL, d.maxBatchBytes)
    }

    @Test
    fun `a body cap too small for a message is an InvalidArgument naming it`() = runBlocking<Unit> {
        val config = serverConfig(DMS1, TestCerts.dms1, https = HttpsSettings(maxBodyBytes = 100uL))
        val e = assertFailsWith<DelegationException.InvalidArgument> {
            DelegationServer.start(config, DeviceHost(DMS1, newDevice()))
        }
        assertEquals("https.max_body_bytes", e.field)
        assertContains(e.reason, "100")
    }

    @Test
    fun `a zero duration or count is an InvalidArgument naming the field`() = runBlocking<Unit> {
        val cases = listOf(
            HttpsSettings(connectTimeoutMs = 0uL) to "https.connect_timeout",
            HttpsSettings(attempts = 0u) to "https.attempts",
            HttpsSettings(maxBatchMessages = 0uL) to "https.max_batch_messages",
        )
        for ((https, field) in cases) {
            val e = assertFailsWith<DelegationException.InvalidArgument> {
                DelegationServer.start(serverConfig(DMS1, TestCerts.dms1, https = https), DeviceHost(DMS1))
            }
            assertEquals(field, e.field)
        }
    }
}
