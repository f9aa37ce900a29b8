package org.dmdelegate

import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/**
 * Issues in the Rust layer found from Kotlin, fixed since; each test pins the fix.
 */
@Timeout(60)
class RegressionTest {
    /**
     * A FAILURE's text may hold 1024 bytes, and nothing clips the reason a host gives: DMS-2
     * rolls back and sends a FAILURE that DMS-1 refuses as malformed, so DMS-1 keeps the
     * device prepared until its confirm deadline (5 minutes by default).
     */
    @Test
    fun `a host reason longer than 1024 bytes still fails the delegation on both sides`() = runBlocking<Unit> {
        val device = newDevice()
        val host2 = object : DeviceHost(DMS2, device) {
            override fun openDmSession(session: Session) =
                throw DelegationException.Host(150u, "the hub said: " + "x".repeat(1100))
        }
        Servers.start(DeviceHost(DMS1, device), host2).use { servers ->
            val before = device.dump()
            val id = servers.startDelegation(1, DelegationType.PARTIAL, device.device())

            assertEquals(SessionState.ROLLED_BACK, servers.dms2.wait(id, WAIT).state)
            assertEquals(SessionState.ROLLED_BACK, servers.dms1.wait(id, 10.seconds).state)
            assertEquals(before, device.dump())
        }
    }

    /**
     * The same through the usual path: an unexpected exception becomes reason 199 with the
     * exception's whole stack trace as its text, which a real application's stack makes
     * longer than 1024 bytes.
     */
    @Test
    fun `a RuntimeException with a deep stack trace rolls back both sides with 199`() = runBlocking<Unit> {
        fun deep(n: Int): Nothing = if (n == 0) throw IllegalStateException("hub down") else deep(n - 1)
        val device = newDevice()
        val host2 = object : DeviceHost(DMS2, device) {
            override fun openDmSession(session: Session) = deep(40)
        }
        Servers.start(DeviceHost(DMS1, device), host2).use { servers ->
            val id = servers.startDelegation(1, DelegationType.PARTIAL, device.device())
            val atDms2 = servers.dms2.wait(id, WAIT)
            val atDms1 = servers.dms1.wait(id, 10.seconds)

            assertEquals(SessionState.ROLLED_BACK to SessionState.ROLLED_BACK, atDms1.state to atDms2.state)
            assertEquals(199, atDms1.reasonCode?.toInt())
        }
    }

    /**
     * `onEvent` returns nothing, so uniffi turns a Kotlin exception there into a Rust panic
     * inside the engine: the session is left in NOTIF_SENT with the device locked (further
     * delegations of it fail with 105) and the peer rolls back with 170.
     */
    @Test
    fun `an exception from onEvent does not disturb the delegation`() = runBlocking<Unit> {
        val device = newDevice()
        val host1 = object : DeviceHost(DMS1, device) {
            override fun onEvent(event: DelegationEvent) = throw IllegalStateException("event sink broken")
        }
        Servers.start(host1, DeviceHost(DMS2, device)).use { servers ->
            val outcome = servers.delegate(1, DelegationType.PARTIAL, device.device())
            assertEquals(SessionState.COMPLETED to SessionState.COMPLETED, outcome.states)
        }
    }

    /**
     * `shutdown()` stops accepting connections but not the connections already open: a peer
     * that still holds one (HTTP keep-alive) delivers its next message, which the stopped
     * server takes in; it can answer nothing, and the sender waits for its response deadline.
     */
    @Test
    fun `a server that was shut down takes no message on a connection already open`() = runBlocking<Unit> {
        val device = newDevice()
        Servers.start(DeviceHost(DMS1, device), DeviceHost(DMS2, device)).use { servers ->
            // One delegation, so DMS-1 holds a connection to DMS-2.
            val first = servers.delegate(1, DelegationType.PARTIAL, device.device())
            assertEquals(SessionState.COMPLETED to SessionState.COMPLETED, first.states)

            servers.dms2.shutdown()
            val id = servers.startDelegation(1, DelegationType.PARTIAL, device.device())

            assertEquals(170, servers.dms1.wait(id, 10.seconds).reasonCode?.toInt())
            assertFailsWith<DelegationException.UnknownSession> { servers.dms2.session(id) }
        }
    }
}
