package org.dmdelegate

import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.CopyOnWriteArrayList
import kotlin.time.Duration
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.delay
import kotlinx.coroutines.withTimeout

// What every test shares: the two DM Servers, their certificates, simulated devices and a
// Kotlin DelegationHost that forwards to them (the same roles as bindings/c/tests).

/** DMS-1: the operator's DM Server, which manages the devices at first. */
const val DMS1 = "dms1.operator.example"

/** DMS-2: the enterprise's DM Server, which receives authority. */
const val DMS2 = "dms2.enterprise.example"

const val DMS1_URL = "https://dms1.operator.example/dm"
const val DMS2_URL = "https://dms2.enterprise.example/dm"

/** DMS-2's Bootstrap Server (Methods 3/4). */
const val BOOTSTRAP_URL = "https://bootstrap.enterprise.example/bs"

/** How long a test waits for a delegation to end; they take well under a second. */
val WAIT: Duration = 30.seconds

/** One test PKI for the suite: the CA both servers trust and each server's certificate. */
object TestCerts {
    private val pki = TestPki("dmdelegate Kotlin tests")
    val caPem: String = pki.caPem()
    val dms1: Identity = pki.issue(DMS1)
    val dms2: Identity = pki.issue(DMS2)
}

/** A device with the sample tree, managed by DMS-1 alone (its account is installed). */
fun newDevice(imei: String = "490154203237518"): SimDevice =
    SimDevice(
        device = Device(deviceId = "IMEI:$imei", manufacturer = "Acme", model = "Phone X"),
        ownerServerId = DMS1,
        ownerUrl = DMS1_URL,
        clientSecret = "dms1-client-secret",
        serverSecret = "dms1-server-secret",
    )

/** The DM account DMS-2 gives the devices: what its `dmAccount` returns and its Bootstrap Server serves. */
fun dms2Account(): String =
    simpleDmaccTnds(DMS2, DMS2_URL, "dms2-client-secret", "dms2-server-secret")

/** DMS-2's Bootstrap Server, serving [dms2Account] at [BOOTSTRAP_URL]. */
fun dms2BootstrapServer(): SimBootstrapServer =
    SimBootstrapServer().apply { register(BOOTSTRAP_URL, dms2Account()) }

/**
 * A host DM Server over simulated devices: accepts every offer (unless [policy] says
 * otherwise), runs DMS-1's commands on the device in its own name, opens DMS-2's session,
 * gives DMS-2's account and Bootstrap Server URL, and records offers and events.
 *
 * The library calls it on its own threads, several sessions at once: everything here is
 * thread-safe. Tests override single callbacks to make it misbehave.
 */
open class DeviceHost(val serverId: String, vararg devices: SimDevice) : DelegationHost {
    private val devices = ConcurrentHashMap(devices.associateBy { it.device().deviceId })

    /** The policy for offers from peers. */
    @Volatile
    var policy: (Offer) -> PolicyAnswer = { PolicyAnswer.Accept }

    val offers = CopyOnWriteArrayList<Offer>()
    val events = CopyOnWriteArrayList<DelegationEvent>()

    fun deviceFor(device: Device): SimDevice =
        devices[device.deviceId]
            ?: throw DelegationException.Device(404u, "no device ${device.deviceId} here")

    override fun acceptDelegation(offer: Offer): PolicyAnswer {
        offers += offer
        return policy(offer)
    }

    override fun execute(device: Device, command: Command): String? =
        deviceFor(device).execute(serverId, command)

    override fun openDmSession(session: Session) = deviceFor(session.device).openSession(serverId)

    override fun dmAccount(device: Device): String = dms2Account()

    override fun bootstrapServerUrl(device: Device): String = BOOTSTRAP_URL

    override fun onEvent(event: DelegationEvent) {
        events += event
    }

    /** The kinds of events reported for one session, in order. */
    fun eventsOf(sessionId: String): List<EventKind> =
        events.filter { it.sessionId == sessionId }.map { it.kind }
}

/** A server's configuration on 127.0.0.1, any free port, under [TestCerts]. */
fun serverConfig(
    serverId: String,
    identity: Identity,
    timeouts: Timeouts? = null,
    https: HttpsSettings? = null,
) =
    ServerConfig(
        serverId = serverId,
        listenAddress = "127.0.0.1:0",
        certPem = identity.certPem,
        keyPem = identity.keyPem,
        trustPem = TestCerts.caPem,
        timeouts = timeouts,
        https = https,
    )

/**
 * DMS-1 and DMS-2 over HTTPS with mutual TLS on loopback, each with its host. Each is
 * started without peers; once both ports are known each gets the other as its peer: its
 * ServerID, its endpoint URL on the name its certificate carries, and the loopback
 * address to connect to instead of resolving that name.
 */
class Servers(val dms1: DelegationServer, val dms2: DelegationServer) : AutoCloseable {
    override fun close() {
        dms1.close()
        dms2.close()
    }

    companion object {
        suspend fun start(
            host1: DelegationHost,
            host2: DelegationHost,
            timeouts: Timeouts? = null,
            https: HttpsSettings? = null,
        ): Servers {
            val dms1 = DelegationServer.start(serverConfig(DMS1, TestCerts.dms1, timeouts, https), host1)
            val dms2 = DelegationServer.start(serverConfig(DMS2, TestCerts.dms2, timeouts, https), host2)
            dms1.setPeers(
                listOf(Peer(serverId = DMS2, endpoint = dms2.endpointUrl(DMS2), address = "127.0.0.1:${dms2.localPort()}"))
            )
            dms2.setPeers(
                listOf(Peer(serverId = DMS1, endpoint = dms1.endpointUrl(DMS1), address = "127.0.0.1:${dms1.localPort()}"))
            )
            return Servers(dms1, dms2)
        }
    }
}

/** Full: the whole tree; Partial: `./Vendor/Apps` with Add, Get and Replace. */
fun subtreesFor(type: DelegationType): List<Subtree> =
    when (type) {
        DelegationType.FULL -> listOf(Subtree(uri = ".", rights = "Get"))
        DelegationType.PARTIAL -> listOf(Subtree(uri = "./Vendor/Apps", rights = "Add+Get+Replace"))
    }

/** Methods 1 and 3 are started by DMS-1, 2 and 4 by DMS-2. */
fun dms1Starts(method: Int) = method == 1 || method == 3

/** A delegation as each server sees it once it ended. */
data class Outcome(val atDms1: Session, val atDms2: Session) {
    val states get() = atDms1.state to atDms2.state
    val reasonCodes get() = atDms1.reasonCode?.toInt() to atDms2.reasonCode?.toInt()
}

/** Starts a delegation of [device] from the method's initiator and returns its session id. */
suspend fun Servers.startDelegation(method: Int, type: DelegationType, device: Device): String {
    val initiator = if (dms1Starts(method)) dms1 else dms2
    val peer = if (dms1Starts(method)) DMS2 else DMS1
    return initiator.startDelegation(
        DelegationRequest(
            peer = peer,
            method = method.toUByte(),
            delegationType = type,
            device = device,
            subtrees = subtreesFor(type),
        )
    )
}

/** Waits for the session to end at both servers. */
suspend fun Servers.outcome(sessionId: String): Outcome =
    Outcome(dms1.wait(sessionId, WAIT), dms2.wait(sessionId, WAIT))

/** Runs one delegation to its end. */
suspend fun Servers.delegate(method: Int, type: DelegationType, device: Device): Outcome =
    outcome(startDelegation(method, type, device))

/** Polls [condition] every 20 ms until it holds, failing after [timeout]. */
suspend fun eventually(timeout: Duration = 10.seconds, condition: suspend () -> Boolean) {
    withTimeout(timeout) {
        while (!condition()) delay(20)
    }
}

/** The throwable without its stack trace, so that its text (all the library reports of it) stays short. */
fun <T : Throwable> T.withoutStackTrace(): T = apply { stackTrace = emptyArray() }
