// DMS-1 delegates a (simulated) device to DMS-2 over HTTPS with mutual TLS, and prints the
// outcome. Usage: Delegate [METHOD 1-4] [full|partial]   (default: 1 partial)
package org.dmdelegate.examples

import kotlin.system.exitProcess
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.runBlocking
import org.dmdelegate.Command
import org.dmdelegate.DelegationEvent
import org.dmdelegate.DelegationHost
import org.dmdelegate.DelegationRequest
import org.dmdelegate.DelegationServer
import org.dmdelegate.DelegationType
import org.dmdelegate.Device
import org.dmdelegate.EventKind
import org.dmdelegate.Offer
import org.dmdelegate.PolicyAnswer
import org.dmdelegate.ServerConfig
import org.dmdelegate.Session
import org.dmdelegate.SessionState
import org.dmdelegate.SimBootstrapServer
import org.dmdelegate.SimDevice
import org.dmdelegate.Subtree
import org.dmdelegate.TestPki
import org.dmdelegate.asPeer
import org.dmdelegate.simpleDmaccTnds
import org.dmdelegate.wait

const val DMS1 = "dms1.operator.example"
const val DMS2 = "dms2.enterprise.example"
const val BOOTSTRAP_URL = "https://bootstrap.enterprise.example/bs"

/**
 * A DM Server's side of delegation, over one simulated device: it accepts offers for that
 * device, runs DMS-1's commands on it in its own name, opens DMS-2's DM session, and gives
 * DMS-2's account. The library calls it on its own threads.
 */
class SimulatedHost(
    private val serverId: String,
    private val device: SimDevice,
    private val account: String? = null,
) : DelegationHost {
    override fun acceptDelegation(offer: Offer): PolicyAnswer =
        if (offer.device == device.device()) PolicyAnswer.Accept
        else PolicyAnswer.Reject(reasonCode = 102u, reasonText = "unknown device")

    override fun execute(device: Device, command: Command): String? = this.device.execute(serverId, command)

    override fun openDmSession(session: Session) = device.openSession(serverId)

    override fun dmAccount(device: Device): String = checkNotNull(account) { "$serverId gives no account" }

    override fun bootstrapServerUrl(device: Device): String = BOOTSTRAP_URL

    override fun onEvent(event: DelegationEvent) { // must return at once, and never throw
        (event.kind as? EventKind.StateChanged)?.let { println("  $serverId: ${it.from} -> ${it.to}") }
    }
}

fun main(args: Array<String>) {
    val method = args.getOrNull(0)?.toIntOrNull()?.takeIf { it in 1..4 } ?: 1
    val type = if (args.getOrNull(1) == "full") DelegationType.FULL else DelegationType.PARTIAL
    val completed = runBlocking { delegate(method, type) }
    exitProcess(if (completed) 0 else 1)
}

suspend fun delegate(method: Int, type: DelegationType): Boolean {
    // A test PKI: one CA, a certificate per server named by its ServerID.
    val pki = TestPki("dmdelegate example CA")
    fun config(serverId: String) = pki.issue(serverId).let {
        ServerConfig(serverId = serverId, listenAddress = "127.0.0.1:0", certPem = it.certPem, keyPem = it.keyPem, trustPem = pki.caPem())
    }
    // The device, managed by DMS-1; the account DMS-2 wants it to have.
    val device = SimDevice(Device("IMEI:490154203237518", "Acme", "Phone X"), DMS1, "https://$DMS1/dm", "c1", "s1")
    val dms2Account = simpleDmaccTnds(DMS2, "https://$DMS2/dm", "c2", "s2")

    DelegationServer.start(config(DMS1), SimulatedHost(DMS1, device)).use { dms1 ->
        DelegationServer.start(config(DMS2), SimulatedHost(DMS2, device, dms2Account)).use { dms2 ->
            // Both run on this machine: connect to 127.0.0.1, check the certificates' names.
            dms1.setPeers(listOf(dms2.asPeer(address = "127.0.0.1:${dms2.localPort()}")))
            dms2.setPeers(listOf(dms1.asPeer(address = "127.0.0.1:${dms1.localPort()}")))
            if (method >= 3) { // the device bootstraps from DMS-2's Bootstrap Server
                device.routeBootstrap(SimBootstrapServer().apply { register(BOOTSTRAP_URL, dms2Account) }, dms2)
            }

            val (initiator, peer) = if (method == 1 || method == 3) dms1 to DMS2 else dms2 to DMS1
            val subtrees = when (type) {
                DelegationType.FULL -> listOf(Subtree(uri = ".", rights = "Get"))
                DelegationType.PARTIAL -> listOf(Subtree(uri = "./Vendor/Apps", rights = "Add+Get+Replace"))
            }
            println("Method $method, ${type.name.lowercase()} delegation of ${device.device().deviceId} from $DMS1 to $DMS2")
            val sessionId = initiator.startDelegation(
                DelegationRequest(peer = peer, method = method.toUByte(), delegationType = type, device = device.device(), subtrees = subtrees)
            )
            val atDms1 = dms1.wait(sessionId, 60.seconds)
            val atDms2 = dms2.wait(sessionId, 60.seconds)

            println("Session $sessionId")
            for (s in listOf(atDms1, atDms2)) {
                println("  ${s.role}: ${s.state}" + (s.reasonCode?.let { " ($it: ${s.reasonText})" } ?: ""))
            }
            println("Accounts on the device: $DMS1 ${device.accountsOf(DMS1)}, $DMS2 ${device.accountsOf(DMS2)}")
            if (type == DelegationType.PARTIAL) println("ACL of ./Vendor/Apps: ${device.aclOf("./Vendor/Apps")}")
            return atDms1.state == SessionState.COMPLETED && atDms2.state == SessionState.COMPLETED
        }
    }
}
