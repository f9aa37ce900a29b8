//! The networked device: Package 0, SyncML DM sessions (Basic and MD5), NoAutoSession,
//! and bootstrap over HTTPS, against a tiny SyncML server written here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use dmdelegate::dmacc::AuthType;
use dmdelegate::sim::{SimBootstrapServer, SimDevice};
use dmdelegate::syncml::{
    alert, codes, command_output_from, commands_for, AuthScheme, Chal, Notification, Status,
    SyncCommand, SyncHeader, SyncMessage, MEDIA_TYPE, NOTIFICATION_MEDIA_TYPE,
};
use dmdelegate::{Acl, ClientCommand, CommandOutput, DeviceInfo, DmAcc, Node};
use dmdelegate_net::bootstrap::BootstrapServer;
use dmdelegate_net::device::{DeviceOptions, NetworkDevice};
use dmdelegate_net::TestPki;

const DEVICE_ID: &str = "IMEI:490154203237518";
const WAIT: Duration = Duration::from_secs(10);

/// What the test server demands and sends.
struct Script {
    server_id: String,
    scheme: AuthScheme,
    client_name: String,
    client_secret: String,
    commands: Vec<ClientCommand>,
}

#[derive(Default)]
struct Seen {
    received: Vec<SyncMessage>,
    challenged: Option<Vec<u8>>,
    authenticated: bool,
    msg_id: u32,
}

struct ServerState {
    url: String,
    script: Script,
    seen: Mutex<Seen>,
}

/// A minimal DM Server on plain HTTP: authenticates the session's first message
/// (challenging once for MD5), then sends its commands in one package and ends the
/// session on the device's answer.
struct TestServer {
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    async fn start(script: Script) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/dm", listener.local_addr().unwrap());
        let state = Arc::new(ServerState {
            url,
            script,
            seen: Mutex::new(Seen::default()),
        });
        let app = Router::new()
            .route("/dm", post(handle))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestServer { state, task }
    }

    fn url(&self) -> String {
        self.state.url.clone()
    }

    fn received(&self) -> Vec<SyncMessage> {
        self.state.seen.lock().unwrap().received.clone()
    }

    /// The account the device holds for this server.
    fn account(&self, server_secret: &str) -> DmAcc {
        let s = &self.state.script;
        let mut acc = DmAcc::simple(&s.server_id, &self.url(), &s.client_secret, server_secret);
        acc.auths[0].name = Some(s.client_name.clone());
        acc
    }

    /// Sends Package 0 to `device`; returns the HTTP status.
    async fn notify(&self, device: &NetworkDevice, secret: &str, session: u16) -> u16 {
        let bytes =
            Notification::new(session, self.state.script.server_id.clone()).encode(secret, b"");
        post_package0(device, bytes).await
    }
}

fn http_client() -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap()
}

async fn post_package0(device: &NetworkDevice, bytes: Vec<u8>) -> u16 {
    http_client()
        .post(device.notify_url())
        .header(header::CONTENT_TYPE, NOTIFICATION_MEDIA_TYPE)
        .body(bytes)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn handle(State(state): State<Arc<ServerState>>, body: Bytes) -> impl IntoResponse {
    let msg = SyncMessage::from_xml(&body).expect("the device sends valid SyncML");
    let script = &state.script;
    let mut seen = state.seen.lock().unwrap();
    seen.received.push(msg.clone());
    seen.msg_id += 1;
    let header_status = |code: u16, chal: Option<Chal>| {
        SyncCommand::Status(Status {
            cmd_id: 1,
            msg_ref: msg.header.msg_id,
            cmd_ref: 0,
            cmd: "SyncHdr".into(),
            target_ref: Some(msg.header.target.clone()),
            source_ref: Some(msg.header.source.clone()),
            chal,
            data: code,
            items: Vec::new(),
        })
    };
    let mut answer = SyncMessage {
        header: SyncHeader {
            session_id: msg.header.session_id.clone(),
            msg_id: seen.msg_id,
            target: msg.header.source.clone(),
            source: state.url.clone(),
            source_name: None,
            resp_uri: None,
            cred: None,
            max_msg_size: None,
        },
        body: Vec::new(),
        final_: true,
    };
    if seen.authenticated {
        answer.body.push(header_status(200, None));
    } else {
        let name = msg.header.source_name.clone().unwrap_or_default();
        let cred = msg
            .header
            .cred
            .as_ref()
            .filter(|c| c.scheme == script.scheme);
        let ok = name == script.client_name
            && match (script.scheme, &seen.challenged) {
                (AuthScheme::Basic, _) => {
                    cred.is_some_and(|c| c.verify(&name, &script.client_secret, b""))
                }
                (AuthScheme::Md5, Some(nonce)) => {
                    cred.is_some_and(|c| c.verify(&name, &script.client_secret, nonce))
                }
                // Always challenge the first MD5 attempt: a fresh nonce for this session.
                (AuthScheme::Md5, None) => false,
            };
        if ok {
            seen.authenticated = true;
            answer.body.push(header_status(codes::AUTH_ACCEPTED, None));
            answer.body.extend(commands_for(&script.commands, 2));
        } else {
            let chal = match script.scheme {
                AuthScheme::Md5 => Chal::md5(b"fresh server nonce".to_vec()),
                AuthScheme::Basic => Chal::basic(),
            };
            seen.challenged = chal.next_nonce.clone().or(Some(Vec::new()));
            answer
                .body
                .push(header_status(codes::INVALID_CREDENTIALS, Some(chal)));
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, MEDIA_TYPE)],
        answer.to_xml(),
    )
}

fn acl(text: &str) -> Acl {
    Acl::parse(text).unwrap()
}

fn sim_device() -> Arc<SimDevice> {
    Arc::new(SimDevice::new(DeviceInfo {
        device_id: DEVICE_ID.into(),
        manufacturer: "Acme".into(),
        model: "Phone 1".into(),
    }))
}

fn script(server_id: &str, scheme: AuthScheme, commands: Vec<ClientCommand>) -> Script {
    Script {
        server_id: server_id.into(),
        scheme,
        client_name: "device-user".into(),
        client_secret: "client secret".into(),
        commands,
    }
}

/// Add a node the server owns, hand Replace over in its ACL, read the ACL back, and try
/// a Delete the device's ACLs forbid.
fn tree_commands(s: &str) -> Vec<ClientCommand> {
    vec![
        ClientCommand::Add {
            parent: ".".into(),
            node: Node::interior("Vendor", vec![Node::leaf("Setting", "42")])
                .with_acl(acl(&format!("Add={s}&Delete={s}&Get={s}&Replace={s}"))),
        },
        ClientCommand::ReplaceAcl {
            uri: "./Vendor".into(),
            acl: acl(&format!("Get=*&Replace={s}")),
        },
        ClientCommand::GetAcl {
            uri: "./Vendor".into(),
        },
        ClientCommand::Delete {
            uri: "./DevInfo/DevId".into(),
        },
    ]
}

/// The device's answers in `msg`, mapped back to outcomes in command order.
fn outcomes(msg: &SyncMessage) -> Vec<Result<CommandOutput, u16>> {
    msg.body
        .iter()
        .filter(|c| matches!(c, SyncCommand::Status(s) if s.cmd_ref != 0))
        .map(|status| {
            let SyncCommand::Status(s) = status else {
                unreachable!()
            };
            let results = msg
                .body
                .iter()
                .find(|c| matches!(c, SyncCommand::Results(r) if r.cmd_ref == s.cmd_ref));
            command_output_from(status, results).map_err(|e| e.status)
        })
        .collect()
}

fn alert_of(msg: &SyncMessage) -> Option<u16> {
    msg.body.iter().find_map(|c| match c {
        SyncCommand::Alert(a) => Some(a.data),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_initiated_session_with_basic_credentials() {
    let s = "dms1.example";
    let server = TestServer::start(script(s, AuthScheme::Basic, tree_commands(s))).await;
    let device = sim_device();
    device.provision_account(&server.account("server secret"));
    let net = NetworkDevice::start(device.clone(), DeviceOptions::default())
        .await
        .unwrap();

    assert_eq!(server.notify(&net, "server secret", 0x1234).await, 200);
    let sessions = net.wait_for_sessions(1, WAIT).await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].server_id, s);
    assert_eq!(sessions[0].session_id, "4660");
    assert!(sessions[0].initiated_by_server);
    assert_eq!(sessions[0].outcome, Ok(4));

    let received = server.received();
    assert_eq!(received.len(), 2);
    let first = &received[0];
    assert_eq!(
        (first.header.session_id.as_str(), first.header.msg_id),
        ("4660", 1)
    );
    assert_eq!(first.header.target, server.url());
    assert_eq!(first.header.source, DEVICE_ID);
    assert_eq!(first.header.source_name.as_deref(), Some("device-user"));
    let cred = first.header.cred.as_ref().unwrap();
    assert_eq!(
        cred.basic_parts(),
        Some(("device-user".into(), "client secret".into()))
    );
    assert_eq!(alert_of(first), Some(alert::SERVER_INITIATED));
    assert!(first.final_);

    let second = &received[1];
    assert_eq!(second.header.msg_id, 2);
    assert!(second.final_);
    assert!(second.body.iter().any(
        |c| matches!(c, SyncCommand::Status(st) if st.cmd_ref == 0 && st.cmd == "SyncHdr" && st.msg_ref == 1)
    ));
    assert_eq!(
        outcomes(second),
        vec![
            Ok(CommandOutput::Done),
            Ok(CommandOutput::Done),
            Ok(CommandOutput::Acl(acl(&format!("Get=*&Replace={s}")))),
            Err(425),
        ]
    );
    assert_eq!(device.value("./Vendor/Setting").as_deref(), Some("42"));
    assert_eq!(
        device.acl_of("./Vendor").unwrap(),
        acl(&format!("Get=*&Replace={s}"))
    );
    assert_eq!(device.value("./DevInfo/DevId").as_deref(), Some(DEVICE_ID));
    assert_eq!(device.sessions(), vec![s.to_string()]);
    assert_eq!(net.notifications_refused(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_credentials_answer_a_challenge_once() {
    let s = "dms1.example";
    let server =
        TestServer::start(script(s, AuthScheme::Md5, tree_commands(s)[..3].to_vec())).await;
    let device = sim_device();
    let mut acc = server.account("server secret");
    acc.auths[0].auth_type = AuthType::Digest;
    acc.auths[0].data = Some("aW5pdGlhbCBub25jZQ==".into()); // "initial nonce"
                                                             // The Package 0 digest uses the SRVCRED nonce.
    acc.auths[1].data = Some("c3J2IG5vbmNl".into()); // "srv nonce"
    device.provision_account(&acc);
    let net = NetworkDevice::start(device.clone(), DeviceOptions::default())
        .await
        .unwrap();

    // Without the SRVCRED nonce the digest is wrong.
    assert_eq!(server.notify(&net, "server secret", 7).await, 401);
    let bytes = Notification::new(7, s).encode("server secret", b"srv nonce");
    assert_eq!(post_package0(&net, bytes).await, 200);
    let sessions = net.wait_for_sessions(1, WAIT).await;
    assert_eq!(sessions[0].outcome, Ok(3));

    let received = server.received();
    assert_eq!(received.len(), 3);
    let c1 = received[0].header.cred.as_ref().unwrap();
    assert_eq!(c1.scheme, AuthScheme::Md5);
    assert!(c1.verify("device-user", "client secret", b"initial nonce"));
    let retry = &received[1];
    assert_eq!(retry.header.msg_id, 2);
    assert_eq!(alert_of(retry), Some(alert::SERVER_INITIATED));
    let c2 = retry.header.cred.as_ref().unwrap();
    assert!(c2.verify("device-user", "client secret", b"fresh server nonce"));
    assert_eq!(
        outcomes(&received[2]),
        vec![
            Ok(CommandOutput::Done),
            Ok(CommandOutput::Done),
            Ok(CommandOutput::Acl(acl(&format!("Get=*&Replace={s}")))),
        ]
    );
    assert_eq!(net.notifications_refused(), 1);

    // A wrong secret: one retry, then the device gives up, having executed nothing.
    let bad = TestServer::start(script("dms9.example", AuthScheme::Md5, tree_commands(s))).await;
    let mut acc = bad.account("s9");
    acc.auths[0].auth_type = AuthType::Digest;
    acc.auths[0].secret = Some("not the secret".into());
    device.provision_account(&acc);
    assert_eq!(bad.notify(&net, "s9", 8).await, 200);
    let sessions = net.wait_for_sessions(2, WAIT).await;
    let failed = &sessions[1];
    assert_eq!(failed.server_id, "dms9.example");
    assert!(
        failed
            .outcome
            .as_ref()
            .unwrap_err()
            .contains("credentials refused"),
        "{failed:?}"
    );
    assert_eq!(bad.received().len(), 2);
    assert!(device.value("./Vendor/Setting").is_some());
    assert!(device.log().iter().all(|l| !l.starts_with("dms9.example")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_package0_is_refused_and_opens_no_session() {
    let s = "dms1.example";
    let server = TestServer::start(script(s, AuthScheme::Basic, tree_commands(s))).await;
    let device = sim_device();
    device.provision_account(&server.account("server secret"));
    let net = NetworkDevice::start(device.clone(), DeviceOptions::default())
        .await
        .unwrap();

    assert_eq!(server.notify(&net, "wrong secret", 1).await, 401);
    let stranger = Notification::new(2, "stranger.example").encode("server secret", b"");
    assert_eq!(post_package0(&net, stranger).await, 404);
    assert_eq!(post_package0(&net, b"not a package 0".to_vec()).await, 400);
    let mut tampered = Notification::new(3, s).encode("server secret", b"");
    tampered[22] ^= 0xFF; // the session id (after the digest and 40 header bits)
    assert_eq!(post_package0(&net, tampered).await, 401);
    assert_eq!(net.notifications_refused(), 4);

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(net.sessions().is_empty());
    assert!(server.received().is_empty());
    assert!(device.sessions().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_automatic_session_to_an_account_marked_no_auto_session() {
    let s = "dms2.example";
    let server = TestServer::start(script(s, AuthScheme::Basic, Vec::new())).await;
    let device = sim_device();
    let mut node = server.account("server secret").to_node();
    node.children.push(Node::interior(
        "Ext",
        vec![Node::leaf("NoAutoSession", "true")],
    ));
    device
        .provision(
            "./DMAcc",
            node.with_acl(acl(&format!("Get={s}&Replace={s}"))),
        )
        .unwrap();
    assert!(!device.may_open_session_on_its_own(s));
    let net = NetworkDevice::start(device.clone(), DeviceOptions::default())
        .await
        .unwrap();

    let refused = net.initiate_session(s).await.unwrap_err();
    assert!(refused.contains("NoAutoSession"), "{refused}");
    assert_eq!(net.initiations_refused(), 1);
    assert!(server.received().is_empty());
    assert!(net.sessions().is_empty());

    // The server may still start a session itself.
    assert_eq!(server.notify(&net, "server secret", 9).await, 200);
    let sessions = net.wait_for_sessions(1, WAIT).await;
    assert_eq!(sessions[0].outcome, Ok(0));
    assert_eq!(
        alert_of(&server.received()[0]),
        Some(alert::SERVER_INITIATED)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_over_https_then_a_client_initiated_session() {
    let (s1, s2) = ("dms1.example", "dms2.example");
    let pki = TestPki::new("bootstrap test CA").unwrap();
    let identity = pki
        .issue("bootstrap.enterprise.example", &["127.0.0.1"])
        .unwrap();
    let sim = Arc::new(SimBootstrapServer::new());
    let bs = BootstrapServer::start(sim.clone(), &identity)
        .await
        .unwrap();
    let url = bs.url("/bootstrap/dms2");
    assert!(url.starts_with("https://bootstrap.enterprise.example:"));

    // DMS-2 reads the ACL of its new account in the session the device opens.
    let dms2 = TestServer::start(script(
        s2,
        AuthScheme::Basic,
        vec![ClientCommand::GetAcl {
            uri: "./DMAcc/dms2_example".into(),
        }],
    ))
    .await;
    sim.register(&url, dms2.account("s2"));

    // DMS-1 leaves the bootstrap trigger in a session it starts.
    let trigger = Node::interior(
        "DMDelegate",
        vec![Node::interior(
            "Bootstrap",
            vec![Node::interior(
                "1",
                vec![
                    Node::leaf("URI", &url),
                    Node::leaf("ServerID", s2),
                    Node::leaf("Delegator", s1),
                ],
            )],
        )],
    );
    let dms1 = TestServer::start(script(
        s1,
        AuthScheme::Basic,
        vec![ClientCommand::Add {
            parent: ".".into(),
            node: trigger,
        }],
    ))
    .await;
    let device = sim_device();
    device.provision_account(&dms1.account("s1"));
    let net = NetworkDevice::start(
        device.clone(),
        DeviceOptions {
            bootstrap_ca_pem: Some(pki.ca_pem().to_string()),
            resolve: vec![bs.resolve()],
            ..DeviceOptions::default()
        },
    )
    .await
    .unwrap();

    assert_eq!(dms1.notify(&net, "s1", 100).await, 200);
    let sessions = net.wait_for_sessions(2, WAIT).await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let bootstraps = net.bootstraps();
    assert_eq!(bootstraps.len(), 1);
    assert_eq!(bootstraps[0].outcome, Ok(()));
    assert_eq!(sim.served(), vec![(url.clone(), DEVICE_ID.to_string())]);
    assert_eq!(device.accounts_of(s2), vec!["dms2_example".to_string()]);

    let to_dms2 = sessions.iter().find(|l| l.server_id == s2).unwrap();
    assert!(!to_dms2.initiated_by_server);
    assert_eq!(to_dms2.outcome, Ok(1));
    let first = &dms2.received()[0];
    assert_eq!(alert_of(first), Some(alert::CLIENT_INITIATED));
    assert_eq!(first.header.session_id, to_dms2.session_id);
    // DMS-1, which delegated, may read and delete the account it had installed.
    let Ok(CommandOutput::Acl(got)) = &outcomes(&dms2.received()[1])[0] else {
        panic!("{:?}", dms2.received()[1]);
    };
    assert_eq!(got, &device.acl_of("./DMAcc/dms2_example").unwrap());
    assert!(got.permits(dmdelegate::AclCommand::Delete, s1));
    assert!(got.permits(dmdelegate::AclCommand::Replace, s2));

    // The Bootstrap Server itself: unknown paths and missing device ids.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(dmdelegate_net::tls::trust_anchors(pki.ca_pem()).unwrap())
    .with_no_client_auth();
    let (host, addr) = bs.resolve();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve(&host, addr)
        .build()
        .unwrap();
    let get = |u: String| {
        let client = client.clone();
        async move { client.get(u).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get(format!("{}?device=x", bs.url("/nope"))).await, 404);
    assert_eq!(get(url.clone()).await, 400);
    let ok = client
        .get(format!("{url}?device=other"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ok.headers()[header::CONTENT_TYPE],
        "application/vnd.syncml.dmtnds+xml"
    );
    let tree = dmdelegate::MgmtTree::from_xml(&ok.bytes().await.unwrap()).unwrap();
    assert_eq!(tree.nodes[0].path.as_deref(), Some("./DMAcc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_that_cannot_be_fetched_is_recorded() {
    // The device trusts no CA: the TLS handshake fails and nothing is installed.
    let pki = TestPki::new("untrusted CA").unwrap();
    let identity = pki.issue("bootstrap.enterprise.example", &[]).unwrap();
    let sim = Arc::new(SimBootstrapServer::new());
    let bs = BootstrapServer::start(sim.clone(), &identity)
        .await
        .unwrap();
    let url = bs.url("/b");
    sim.register(
        &url,
        DmAcc::simple("dms2.example", "http://127.0.0.1:9/dm", "c", "s"),
    );
    let device = sim_device();
    let net = NetworkDevice::start(
        device.clone(),
        DeviceOptions {
            resolve: vec![bs.resolve()],
            request_timeout: Duration::from_secs(3),
            ..DeviceOptions::default()
        },
    )
    .await
    .unwrap();
    device
        .execute(
            "anyone",
            &ClientCommand::Add {
                parent: ".".into(),
                node: Node::interior(
                    "DMDelegate",
                    vec![Node::interior(
                        "Bootstrap",
                        vec![Node::interior(
                            "1",
                            vec![
                                Node::leaf("URI", &url),
                                Node::leaf("ServerID", "dms2.example"),
                                Node::leaf("Delegator", "dms1.example"),
                            ],
                        )],
                    )],
                ),
            },
        )
        .unwrap();
    for _ in 0..500 {
        if !net.bootstraps().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let logs = net.bootstraps();
    assert_eq!(logs.len(), 1);
    assert!(logs[0].outcome.is_err(), "{logs:?}");
    assert!(sim.served().is_empty());
    assert!(device.accounts_of("dms2.example").is_empty());
    assert!(net.sessions().is_empty());
}
