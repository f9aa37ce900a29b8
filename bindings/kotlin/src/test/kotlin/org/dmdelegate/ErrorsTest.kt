package org.dmdelegate

import kotlin.test.assertContains
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.time.Duration.Companion.milliseconds
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.Timeout

/**
 * Bad input is refused with the matching subclass of the sealed [DelegationException],
 * before anything is sent or changed; its fields say what was wrong.
 */
@Timeout(60)
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ErrorsTest {
    private val device = newDevice()
    private lateinit var servers: Servers

    @BeforeAll
    fun start() = runBlocking<Unit> {
        servers = Servers.start(DeviceHost(DMS1, device), DeviceHost(DMS2, device))
    }

    @AfterAll
    fun stop() = servers.close()

    private fun request(method: Int = 1, rights: String = "Get") =
        DelegationRequest(
            peer = DMS2,
            method = method.toUByte(),
            delegationType = DelegationType.PARTIAL,
            device = device.device(),
            subtrees = listOf(Subtree(uri = "./Vendor/Apps", rights = rights)),
        )

    @Test
    fun `method 9 is an InvalidArgument naming the method`() = runBlocking<Unit> {
        val e = assertFailsWith<DelegationException.InvalidArgument> {
            servers.dms1.startDelegation(request(method = 9))
        }
        assertEquals("method", e.field)
        assertContains(e.reason, "9")
    }

    @Test
    fun `rights that are no ACL command are an InvalidArgument naming the rights`() = runBlocking<Unit> {
        val e = assertFailsWith<DelegationException.InvalidArgument> {
            servers.dms1.startDelegation(request(rights = "Fly"))
        }
        assertEquals("subtrees[].rights", e.field)
        assertEquals(emptyList(), servers.dms1.sessions()) // nothing was started
    }

    @Test
    fun `a listen address that is no ip and port is an InvalidArgument`() = runBlocking<Unit> {
        val config = serverConfig(DMS1, TestCerts.dms1).copy(listenAddress = "nope")
        val e = assertFailsWith<DelegationException.InvalidArgument> {
            DelegationServer.start(config, DeviceHost(DMS1, device))
        }
        assertEquals("listenAddress", e.field)
    }

    @Test
    fun `a peer address that is no ip and port is an InvalidArgument`() = runBlocking<Unit> {
        DelegationServer.start(serverConfig(DMS1, TestCerts.dms1), DeviceHost(DMS1, device)).use { server ->
            val e = assertFailsWith<DelegationException.InvalidArgument> {
                server.setPeers(listOf(Peer(serverId = DMS2, endpoint = "https://$DMS2/dm-delegation", address = "nope")))
            }
            assertEquals("peers[].address", e.field)
        }
    }

    @Test
    fun `waiting for a session nobody knows is UnknownSession once the time is up`() = runBlocking<Unit> {
        val e = assertFailsWith<DelegationException.UnknownSession> {
            servers.dms1.wait("no-such-session", 100.milliseconds)
        }
        assertEquals("no-such-session", e.sessionId)
        assertFailsWith<DelegationException.UnknownSession> { servers.dms1.cancel("no-such-session") }
    }

    @Test
    fun `every DelegationException is caught as one sealed type`() = runBlocking<Unit> {
        val e: DelegationException = assertFailsWith<DelegationException> {
            servers.dms2.session("no-such-session")
        }
        val what = when (e) {
            is DelegationException.UnknownSession -> "unknown session ${e.sessionId}"
            is DelegationException.InvalidArgument -> "bad ${e.field}"
            else -> "other: ${e.message}"
        }
        assertEquals("unknown session no-such-session", what)
    }

    @Test
    fun `a document that is not a delegation message is a Decode error`() {
        val e = assertFailsWith<DelegationException.Decode> {
            validateMessage("<Delegation/>".toByteArray())
        }
        assertEquals("", e.field) // the document as a whole: it is in no namespace
        assertContains(e.detail, "namespace")
    }

    @Test
    fun `an account for no valid URL is refused when it is built`() {
        assertFailsWith<DelegationException> { simpleDmaccTnds(DMS2, "not a url", "c", "s") }
    }
}
