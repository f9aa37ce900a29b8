package org.dmdelegate

import kotlin.time.Duration

// Small Kotlin conveniences over the generated API (dmdelegate_uniffi.kt). Nothing here
// talks to the library in a way the generated functions do not.

/**
 * Waits at most [timeout] for the session to end (see [DelegationServer.wait]) and returns
 * it as it is then: check [Session.terminal] / [Session.state].
 */
suspend fun DelegationServer.wait(sessionId: String, timeout: Duration): Session =
    wait(sessionId, timeout.inWholeMilliseconds.coerceAtLeast(0).toULong())

/**
 * This server as a [Peer] in another server's configuration: its ServerID and its endpoint
 * on [host] (the DNS name its certificate carries, by default the ServerID), connected to
 * at [address] (`ip:port`) when given instead of resolving [host].
 *
 * For two servers in one process: `dms1.setPeers(listOf(dms2.asPeer(address = "127.0.0.1:${dms2.localPort()}")))`.
 */
fun DelegationServer.asPeer(host: String = serverId(), address: String? = null): Peer =
    Peer(serverId = serverId(), endpoint = endpointUrl(host), address = address)

/** Whether the command changes the device's DM Tree (`Add`, `ReplaceAcl`, `Delete`). */
val Command.isWrite: Boolean
    get() = when (kind) {
        CommandKind.ADD, CommandKind.REPLACE_ACL, CommandKind.DELETE -> true
        CommandKind.GET_TREE, CommandKind.GET_ACL -> false
    }
