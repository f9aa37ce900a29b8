package org.dmdelegate

import java.net.ConnectException
import java.net.Socket
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/**
 * Following delegations: the sessions each server keeps, cancelling one, the events the
 * host receives, several delegations at once from coroutines, and stopping a server.
 */
@Timeout(60)
class SessionsTest {
    @Test
    fun `sessions lists each delegation and cancel rolls an unfinished one back`() = runBlocking<Unit> {
        // Method 3 with a device that never bootstraps: DMS-1 prepares it, then waits for
        // DMS-2's confirmation, which cannot come; the operator cancels.
        val device = newDevice()
        Servers.start(DeviceHost(DMS1, device), DeviceHost(DMS2, device)).use { servers ->
            val before = device.dump()
            val id = servers.startDelegation(3, DelegationType.PARTIAL, device.device())
            eventually { servers.dms1.session(id).state == SessionState.AWAITING_CONFIRM }
            assertEquals(SessionState.AWAITING_CLIENT, servers.dms2.session(id).state)
            assertTrue(device.dump() != before) // prepared: the bootstrap trigger is there

            val listed = servers.dms1.sessions().single()
            assertEquals(id, listed.sessionId)
            assertEquals(false, listed.terminal)
            assertTrue(listed.pendingOperations > 0uL)
            assertTrue(listed.deadlineMs != null)

            val cancelled = servers.dms1.cancel(id)

            assertEquals(SessionState.ROLLED_BACK, cancelled.state)
            assertEquals(150, cancelled.reasonCode?.toInt())
            assertEquals(SessionState.ROLLED_BACK, servers.dms2.wait(id, WAIT).state)
            assertEquals(before, device.dump())
            // An ended session cannot be cancelled again.
            assertFailsWith<DelegationException.InvalidState> { servers.dms1.cancel(id) }
            assertEquals(listOf(id to SessionState.ROLLED_BACK), servers.dms2.sessions().map { it.sessionId to it.state })
        }
    }

    @Test
    fun `the hosts receive every step of a delegation in onEvent`() = runBlocking<Unit> {
        val device = newDevice()
        val host1 = DeviceHost(DMS1, device)
        val host2 = DeviceHost(DMS2, device)
        Servers.start(host1, host2).use { servers ->
            val outcome = servers.delegate(1, DelegationType.PARTIAL, device.device())
            val id = outcome.atDms1.sessionId
            assertEquals(SessionState.COMPLETED to SessionState.COMPLETED, outcome.states)

            // Events arrive on the library's threads; the last one may trail wait() a little.
            eventually { EventKind.Completed in host1.eventsOf(id) && EventKind.Completed in host2.eventsOf(id) }
            for (host in listOf(host1, host2)) {
                val kinds = host.eventsOf(id)
                val steps = kinds.filterIsInstance<EventKind.StateChanged>()
                assertTrue(steps.isNotEmpty(), "$kinds")
                assertEquals(SessionState.COMPLETED, steps.last().to)
                // Each step starts where the previous one ended.
                steps.zipWithNext().forEach { (a, b) -> assertEquals(a.to, b.from, "$kinds") }
                assertTrue(kinds.none { it is EventKind.Failed || it is EventKind.RolledBack }, "$kinds")
            }
            // DMS-1 prepared the device; DMS-2 opened its DM session with it.
            fun visited(host: DeviceHost) = host.eventsOf(id).filterIsInstance<EventKind.StateChanged>().map { it.to }
            assertTrue(SessionState.PREPARING in visited(host1))
            assertTrue(SessionState.OPENING_SESSION in visited(host2))
            assertTrue(host1.events.all { it.role == Role.DELEGATING && it.deviceId == device.device().deviceId })
            assertTrue(host2.events.all { it.role == Role.DELEGATED })
        }
    }

    @Test
    fun `a failed delegation is reported as Failed then RolledBack`() = runBlocking<Unit> {
        val device = newDevice()
        val host1 = object : DeviceHost(DMS1, device) {
            override fun execute(device: Device, command: Command): String? {
                if (command.kind == CommandKind.ADD) throw DelegationException.Device(500u, "disk full (test)")
                return super.execute(device, command)
            }
        }
        Servers.start(host1, DeviceHost(DMS2, device)).use { servers ->
            val outcome = servers.delegate(1, DelegationType.FULL, device.device())
            val id = outcome.atDms1.sessionId
            assertEquals(SessionState.ROLLED_BACK to SessionState.ROLLED_BACK, outcome.states)

            eventually { host1.eventsOf(id).any { it is EventKind.RolledBack } }
            val reported = host1.eventsOf(id).filter { it !is EventKind.StateChanged }
            assertEquals(2, reported.size, "$reported")
            val failed = reported[0] as EventKind.Failed
            val rolledBack = reported[1] as EventKind.RolledBack
            assertEquals(130, failed.reasonCode.toInt())
            assertEquals(130, rolledBack.reasonCode.toInt())
        }
    }

    @Test
    fun `several devices are delegated at once from coroutines`() = runBlocking<Unit> {
        val devices = (0 until 4).map { newDevice("49015420323760$it") }
        val host1 = DeviceHost(DMS1, *devices.toTypedArray())
        val host2 = DeviceHost(DMS2, *devices.toTypedArray())
        Servers.start(host1, host2).use { servers ->
            val bootstrap = dms2BootstrapServer()
            devices.forEach { it.routeBootstrap(bootstrap, servers.dms2) }

            // Device i by method i+1, alternately Full and Partial, all at the same time.
            val outcomes = devices.mapIndexed { i, device ->
                val type = if (i % 2 == 0) DelegationType.FULL else DelegationType.PARTIAL
                async { Triple(device, type, servers.delegate(i + 1, type, device.device())) }
            }.awaitAll()

            for ((device, type, outcome) in outcomes) {
                assertEquals(SessionState.COMPLETED to SessionState.COMPLETED, outcome.states, "${outcome.atDms1}")
                assertEquals(device.device(), outcome.atDms1.device)
                assertTrue(device.accountsOf(DMS2).isNotEmpty())
                assertEquals(type == DelegationType.PARTIAL, device.accountsOf(DMS1).isNotEmpty())
            }
            assertEquals(4, outcomes.map { it.third.atDms1.sessionId }.toSet().size)
            assertEquals(4, servers.dms1.sessions().size)
            assertEquals(4, servers.dms2.sessions().count { it.state == SessionState.COMPLETED })
        }
    }

    @Test
    fun `a delegation to a server that was shut down fails as peer unreachable`() = runBlocking<Unit> {
        val device = newDevice()
        Servers.start(DeviceHost(DMS1, device), DeviceHost(DMS2, device)).use { servers ->
            val before = device.dump()
            val port = servers.dms2.localPort().toInt()
            servers.dms2.shutdown()
            servers.dms2.shutdown() // idempotent

            assertFailsWith<ConnectException> { Socket("127.0.0.1", port).close() }
            val id = servers.startDelegation(1, DelegationType.FULL, device.device())
            val atDms1 = servers.dms1.wait(id, WAIT)
            assertEquals(SessionState.ROLLED_BACK, atDms1.state)
            assertEquals(170, atDms1.reasonCode?.toInt()) // peer unreachable
            assertEquals(before, device.dump())
        }
    }

    @Test
    fun `close releases the server and later calls fail`() = runBlocking<Unit> {
        val device = newDevice()
        val server = DelegationServer.start(serverConfig(DMS1, TestCerts.dms1), DeviceHost(DMS1, device))
        val port = server.localPort().toInt()
        Socket("127.0.0.1", port).close() // listening

        server.use { assertEquals(DMS1, it.serverId()) } // AutoCloseable: `use` closes it

        assertFailsWith<IllegalStateException> { server.sessions() }
        eventually { runCatching { Socket("127.0.0.1", port).close() }.isFailure }
        server.close() // closing twice is harmless
    }
}
