package org.dmdelegate

import kotlin.test.assertEquals
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Timeout
import org.junit.jupiter.params.ParameterizedTest
import org.junit.jupiter.params.provider.Arguments
import org.junit.jupiter.params.provider.MethodSource

/**
 * Every method of the specification, Full and Partial, over HTTPS with mutual TLS: both
 * servers end COMPLETED and the device is managed as the delegation says.
 */
@Timeout(60)
class DelegationMethodsTest {
    companion object {
        @JvmStatic
        fun methodsAndTypes(): List<Arguments> =
            (1..4).flatMap { method -> DelegationType.entries.map { Arguments.of(method, it) } }
    }

    @ParameterizedTest(name = "method {0} {1}: both COMPLETED, DMS-2 manages the device")
    @MethodSource("methodsAndTypes")
    fun `a delegation completes on both sides and changes the device as it says`(
        method: Int,
        type: DelegationType,
    ) = runBlocking<Unit> {
        val device = newDevice()
        val host1 = DeviceHost(DMS1, device)
        val host2 = DeviceHost(DMS2, device)
        Servers.start(host1, host2).use { servers ->
            if (method >= 3) {
                // Methods 3/4: the device fetches DMS-2's account from DMS-2's Bootstrap
                // Server when DMS-1 triggers it, then opens its first session with DMS-2.
                device.routeBootstrap(dms2BootstrapServer(), servers.dms2)
            }
            assertTrue(device.accountsOf(DMS2).isEmpty())

            val outcome = servers.delegate(method, type, device.device())

            assertEquals(SessionState.COMPLETED to SessionState.COMPLETED, outcome.states)
            with(outcome.atDms1) {
                assertEquals(Role.DELEGATING, role)
                assertEquals(method.toUByte(), this.method)
                assertEquals(type, delegationType)
                assertEquals(DMS2, peer)
                assertTrue(terminal)
                assertNull(reasonCode)
                assertEquals(0uL, pendingOperations)
            }
            with(outcome.atDms2) {
                assertEquals(Role.DELEGATED, role)
                assertEquals(DMS1, peer)
                assertEquals(subtreesFor(type), subtrees)
            }

            // The responder was asked, in the role it plays.
            val responder = if (dms1Starts(method)) host2 else host1
            val offer = responder.offers.single()
            assertEquals(outcome.atDms1.sessionId, offer.sessionId)
            assertEquals(if (dms1Starts(method)) Role.DELEGATED else Role.DELEGATING, offer.role)
            assertEquals(if (dms1Starts(method)) DMS1 else DMS2, offer.peer)

            // The device: DMS-2 has its account; Full removed DMS-1's, Partial kept it.
            assertTrue(device.accountsOf(DMS2).isNotEmpty(), device.dump())
            when (type) {
                DelegationType.FULL -> assertTrue(device.accountsOf(DMS1).isEmpty(), device.dump())
                DelegationType.PARTIAL -> {
                    assertTrue(device.accountsOf(DMS1).isNotEmpty(), device.dump())
                    assertTrue(DMS2 in device.aclOf("./Vendor/Apps").orEmpty(), device.dump())
                }
            }
        }
    }
}
