// Interop agent: one DM Server on dmdelegate's Kotlin binding (see interop/README.md).
//
//     java -cp ... org.dmdelegate.interop.AgentKt CONFIG
//
// Reads the agent configuration, starts the server with its device hub and prints READY.
// An initiator then waits for a line on stdin and starts the delegation. Both roles wait
// for the session to end, print "RESULT <state> <reason code>", and keep serving until
// stdin closes.
package org.dmdelegate.interop

import java.io.File
import kotlin.system.exitProcess
import kotlinx.coroutines.runBlocking
import org.dmdelegate.Command
import org.dmdelegate.DelegationEvent
import org.dmdelegate.DelegationException
import org.dmdelegate.DelegationHost
import org.dmdelegate.DelegationRequest
import org.dmdelegate.DelegationServer
import org.dmdelegate.DelegationType
import org.dmdelegate.Device
import org.dmdelegate.DeviceAuthScheme
import org.dmdelegate.DeviceHub
import org.dmdelegate.DeviceLink
import org.dmdelegate.Offer
import org.dmdelegate.Peer
import org.dmdelegate.PolicyAnswer
import org.dmdelegate.ServerConfig
import org.dmdelegate.Session
import org.dmdelegate.SessionState
import org.dmdelegate.Subtree
import org.dmdelegate.Timeouts
import org.dmdelegate.simpleDmaccTnds

/** What interop/run.py writes: one `key value...` per line; a key may repeat. */
class Config(path: String) {
    private val lines: List<List<String>> =
        File(path).readLines().map { it.trim().split(Regex("\\s+")) }.filter { it[0].isNotEmpty() && !it[0].startsWith("#") }

    fun all(key: String): List<List<String>> = lines.filter { it[0] == key }.map { it.drop(1) }

    fun has(key: String) = all(key).isNotEmpty()

    fun words(key: String): List<String> = all(key).firstOrNull() ?: error("configuration lacks `$key`")

    fun one(key: String): String = words(key)[0]
}

/** Policy and account in Kotlin; device access is the server's own hub. */
class HubHost(private val config: Config) : DelegationHost {
    private val serverId = config.one("server_id")
    private val accepts = config.one("accept") == "yes"
    private val hubUrl = "http://${config.one("hub")}/dm"

    private fun noDeviceAccess(): Nothing =
        throw DelegationException.Host(199u, "device access goes through the device hub")

    override fun acceptDelegation(offer: Offer): PolicyAnswer =
        if (accepts) PolicyAnswer.Accept else PolicyAnswer.Reject(101u, "this agent accepts no delegation")

    override fun execute(device: Device, command: Command): String? = noDeviceAccess()

    override fun openDmSession(session: Session) = noDeviceAccess()

    override fun dmAccount(device: Device): String {
        if (!config.has("account")) throw DelegationException.Host(199u, "this agent hands out no account")
        val (clientSecret, serverSecret) = config.words("account")
        return simpleDmaccTnds(serverId, hubUrl, clientSecret, serverSecret)
    }

    override fun bootstrapServerUrl(device: Device): String =
        throw DelegationException.Host(199u, "this agent runs no Bootstrap Server")

    override fun onEvent(event: DelegationEvent) {}
}

/** `ROLLED_BACK` -> `RolledBack`, the names every agent prints. */
fun SessionState.wireName(): String =
    name.lowercase().split('_').joinToString("") { part -> part.replaceFirstChar { it.uppercase() } }

fun main(args: Array<String>) = runBlocking {
    if (args.size != 1) {
        System.err.println("usage: AgentKt CONFIG")
        exitProcess(2)
    }
    val config = Config(args[0])
    val t = config.words("timeouts").map { it.toULong() * 1000u }
    val serverConfig = ServerConfig(
        serverId = config.one("server_id"),
        listenAddress = config.one("listen"),
        certPem = File(config.one("cert")).readText(),
        keyPem = File(config.one("key")).readText(),
        trustPem = File(config.one("trust")).readText(),
        peers = config.all("peer").map { Peer(serverId = it[0], endpoint = it[1], address = it[2]) },
        timeouts = Timeouts(t[0], t[1], t[2], t[3], t[4]),
        deviceHub = DeviceHub(
            listenAddress = config.one("hub"),
            devices = config.all("device").map {
                DeviceLink(
                    deviceId = it[0],
                    notifyUrl = it[1],
                    clientSecret = it[2],
                    serverSecret = it[3],
                    scheme = DeviceAuthScheme.BASIC,
                )
            },
        ),
    )
    val sessionId = config.one("session")
    DelegationServer.start(serverConfig, HubHost(config)).use { server ->
        println("READY")
        System.out.flush()
        if (config.has("delegate")) {
            readlnOrNull()
            val (peer, method, kind, deviceId, manufacturer, model) = config.words("delegate")
            server.startDelegation(
                DelegationRequest(
                    peer = peer,
                    method = method.toUByte(),
                    delegationType = if (kind == "full") DelegationType.FULL else DelegationType.PARTIAL,
                    device = Device(deviceId = deviceId, manufacturer = manufacturer, model = model),
                    // The configuration separates rights with ',', the binding with '+'.
                    subtrees = config.all("subtree").map { Subtree(uri = it[0], rights = it[1].replace(',', '+')) },
                    sessionId = sessionId,
                )
            )
        }
        val session = server.wait(sessionId, config.one("wait").toULong() * 1000u)
        println("RESULT ${session.state.wireName()} ${session.reasonCode?.toInt() ?: 0}")
        System.out.flush()
        while (readlnOrNull() != null) {}
    }
}

private operator fun <T> List<T>.component6(): T = this[5]
