//! SyncML DM 1.2 codec: server packages, device replies, credentials, Package 0, and a
//! whole DM session between a server and the simulated device carried over SyncML XML.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use md5::{Digest, Md5};
use proptest::prelude::*;

use dmdelegate::ops::status;
use dmdelegate::sim::SimDevice;
use dmdelegate::syncml::{
    alert, client_command_from, codes, command_output_from, commands_for, reply_for, Alert,
    AuthScheme, Chal, Cred, Item, Notification, Status, SyncCommand, SyncHeader, SyncMessage,
};
use dmdelegate::{
    Acl, ClientCommand, CommandOutput, DecodeError, DeviceError, DeviceInfo, DmAcc, Node,
};

const DEVICE: &str = "IMEI:490154203237518";
const SERVER: &str = "https://dms1.example/dm";

fn header(msg_id: u32, from_server: bool, cred: Option<Cred>) -> SyncHeader {
    let (target, source) = if from_server {
        (DEVICE, SERVER)
    } else {
        (SERVER, DEVICE)
    };
    SyncHeader {
        session_id: "4660".into(),
        msg_id,
        target: target.into(),
        source: source.into(),
        source_name: Some(if from_server { "dms1" } else { "device" }.into()),
        resp_uri: None,
        cred,
        max_msg_size: Some(16_384),
    }
}

fn account() -> Node {
    let mut node =
        DmAcc::simple("dms2", "https://dms2.example/dm", "c-secret", "s-secret").to_node();
    node.set_acl(
        Acl::parse("Add=dms1+dms2&Delete=dms1+dms2&Get=dms1+dms2&Replace=dms1+dms2").unwrap(),
    );
    node
}

/// Every operation variant the engine sends.
fn operations() -> Vec<ClientCommand> {
    vec![
        ClientCommand::Add {
            parent: "./DMAcc".into(),
            node: account(),
        },
        ClientCommand::ReplaceAcl {
            uri: "./DMAcc".into(),
            acl: Acl::parse("Get=*&Replace=dms1").unwrap(),
        },
        ClientCommand::ReplaceAcl {
            uri: "./DevInfo/Man".into(),
            acl: Acl::empty(),
        },
        ClientCommand::GetAcl {
            uri: "./DevInfo".into(),
        },
        ClientCommand::GetTree {
            uri: "./DMAcc".into(),
            values: false,
        },
        ClientCommand::GetTree {
            uri: "./DevInfo".into(),
            values: true,
        },
        ClientCommand::Delete {
            uri: "./DMAcc/dms2".into(),
        },
    ]
}

/// Package 2 of a server-initiated session: Status for the client's header, Alert 1200,
/// then the operations.
fn server_package(ops: &[ClientCommand]) -> SyncMessage {
    let mut body = vec![
        SyncCommand::Status(Status {
            cmd_id: 1,
            msg_ref: 1,
            cmd_ref: 0,
            cmd: "SyncHdr".into(),
            target_ref: Some(SERVER.into()),
            source_ref: Some(DEVICE.into()),
            chal: None,
            data: codes::AUTH_ACCEPTED,
            items: vec![],
        }),
        SyncCommand::Alert(Alert {
            cmd_id: 2,
            data: alert::SERVER_INITIATED,
            items: vec![],
        }),
    ];
    body.extend(commands_for(ops, 3));
    SyncMessage {
        header: header(
            2,
            true,
            Some(Cred::md5("dms1", "s-secret", b"device-nonce")),
        ),
        body,
        final_: true,
    }
}

#[test]
fn realistic_server_package_round_trips() {
    let msg = server_package(&operations());
    msg.validate().unwrap();
    let xml = msg.to_xml();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>4660</SessionID><MsgID>2</MsgID>"));
    assert!(xml.contains("<Alert><CmdID>2</CmdID><Data>1200</Data></Alert>"));
    assert!(xml.contains("<Type xmlns=\"syncml:metinf\">application/vnd.syncml.dmtnds+xml</Type>"));
    assert!(xml
        .contains("<Meta><MaxMsgSize xmlns=\"syncml:metinf\">16384</MaxMsgSize></Meta></SyncHdr>"));
    assert!(xml.ends_with("<Final/></SyncBody></SyncML>"));
    let back = SyncMessage::from_xml(xml.as_bytes()).unwrap();
    assert_eq!(back, msg);
    assert_eq!(back.to_xml(), xml);
    // Each operation's command is exactly ClientCommand::to_syncml.
    for (op, cmd) in operations().iter().zip(&back.body[2..]) {
        assert!(xml.contains(&op.to_syncml(cmd.cmd_id())));
    }
}

#[test]
fn every_operation_survives_the_wire() {
    let ops = operations();
    let xml = server_package(&ops).to_xml();
    let back = SyncMessage::from_xml(xml.as_bytes()).unwrap();
    let decoded: Vec<ClientCommand> = back.body[2..]
        .iter()
        .map(|c| client_command_from(c).unwrap())
        .collect();
    assert_eq!(decoded, ops);
    // Status and Alert are not operations.
    assert!(client_command_from(&back.body[0]).is_err());
    assert!(client_command_from(&back.body[1]).is_err());
}

#[test]
fn device_replies_round_trip() {
    let ops = operations();
    let cmds = commands_for(&ops, 3);
    let outcomes: Vec<Result<CommandOutput, DeviceError>> = vec![
        Ok(CommandOutput::Done),
        Err(DeviceError::new(
            status::PERMISSION_DENIED,
            "Replace ./DMAcc?prop=ACL denied to dms1",
        )),
        Err(DeviceError::new(status::NOT_ALLOWED, "")),
        Ok(CommandOutput::Acl(Acl::parse("Get=*").unwrap())),
        Ok(CommandOutput::Tree(account())),
        Ok(CommandOutput::Tree(Node::interior(
            "DevInfo",
            vec![Node::leaf("Man", "Acme & <Co>")],
        ))),
        Err(DeviceError::new(
            status::NOT_FOUND,
            "./DMAcc/dms2 not found",
        )),
    ];
    let mut body = vec![SyncCommand::Status(Status {
        cmd_id: 1,
        msg_ref: 2,
        cmd_ref: 0,
        cmd: "SyncHdr".into(),
        target_ref: Some(DEVICE.into()),
        source_ref: Some(SERVER.into()),
        chal: None,
        data: status::OK,
        items: vec![],
    })];
    for (cmd, outcome) in cmds.iter().zip(&outcomes) {
        let next = body.len() as u32 + 1;
        body.extend(reply_for(2, cmd, next, outcome));
    }
    let reply = SyncMessage {
        header: header(2, false, None),
        body,
        final_: true,
    };
    let back = SyncMessage::from_xml(reply.to_xml().as_bytes()).unwrap();
    assert_eq!(back, reply);
    // The server pairs each Status with the Results that follows it.
    let mut got = Vec::new();
    let mut i = 1;
    while i < back.body.len() {
        let results = match back.body.get(i + 1) {
            Some(r @ SyncCommand::Results(_)) => Some(r),
            _ => None,
        };
        got.push(command_output_from(&back.body[i], results));
        i += 1 + usize::from(results.is_some());
    }
    assert_eq!(got, outcomes);
    // A TNDS result names its source and type.
    let SyncCommand::Results(r) = &back.body[7] else {
        panic!("{:?}", back.body[7])
    };
    assert_eq!(r.items[0].source.as_deref(), Some("./DMAcc?list=TNDS+ACL"));
}

#[test]
fn a_dm_session_over_syncml_drives_the_simulated_device() {
    let wire = SimDevice::new(DeviceInfo {
        device_id: DEVICE.into(),
        manufacturer: "Acme".into(),
        model: "R1".into(),
    });
    let direct = SimDevice::new(wire.info());
    for d in [&wire, &direct] {
        d.set_acl_unchecked(
            "./DMAcc",
            Acl::parse("Add=dms1&Get=*&Replace=dms1").unwrap(),
        )
        .unwrap();
    }
    let ops = operations();
    let package = server_package(&ops).to_xml();
    // Device side: decode, execute, answer.
    let received = SyncMessage::from_xml(package.as_bytes()).unwrap();
    let cred = received.header.cred.as_ref().unwrap();
    assert!(cred.verify(
        received.header.source_name.as_deref().unwrap(),
        "s-secret",
        b"device-nonce"
    ));
    let mut body = Vec::new();
    for cmd in &received.body[2..] {
        let op = client_command_from(cmd).unwrap();
        let outcome = wire.execute("dms1", &op);
        let next = body.len() as u32 + 1;
        body.extend(reply_for(received.header.msg_id, cmd, next, &outcome));
    }
    let answer = SyncMessage {
        header: header(3, false, None),
        body,
        final_: true,
    }
    .to_xml();
    // Server side: read the outcomes back and compare with executing directly.
    let answer = SyncMessage::from_xml(answer.as_bytes()).unwrap();
    let mut i = 0;
    let mut outcomes = Vec::new();
    for op in &ops {
        let results = match answer.body.get(i + 1) {
            Some(r @ SyncCommand::Results(_)) => Some(r),
            _ => None,
        };
        let got = command_output_from(&answer.body[i], results);
        assert_eq!(got, direct.execute("dms1", op), "{op}");
        outcomes.push(got.map_err(|e| e.status));
        i += 1 + usize::from(results.is_some());
    }
    assert_eq!(i, answer.body.len());
    assert_eq!(wire.dump(), direct.dump());
    // The session did real work: the account went in and out, a leaf ACL was refused.
    assert_eq!(outcomes[0], Ok(CommandOutput::Done));
    assert_eq!(outcomes[2], Err(status::PERMISSION_DENIED));
    assert!(matches!(&outcomes[4], Ok(CommandOutput::Tree(t)) if t.child("dms2").is_some()));
    assert_eq!(outcomes[6], Ok(CommandOutput::Done));
    assert!(wire.accounts_of("dms2").is_empty());
}

#[test]
fn basic_and_md5_credentials() {
    // Basic: B64("name:secret").
    let basic = Cred::basic("device", "c-secret");
    assert_eq!(basic.data, B64.encode("device:c-secret"));
    assert!(basic.verify("device", "c-secret", b""));
    assert!(!basic.verify("device", "wrong", b""));
    // MD5, computed step by step.
    let nonce = [0u8, 1, 2, 0xFF];
    let inner = B64.encode(Md5::digest(b"device:c-secret"));
    let mut outer = inner.into_bytes();
    outer.push(b':');
    outer.extend_from_slice(&nonce);
    let md5 = Cred::md5("device", "c-secret", &nonce);
    assert_eq!(md5.data, B64.encode(Md5::digest(&outer)));
    assert!(md5.verify("device", "c-secret", &nonce));
    assert!(!md5.verify("device", "c-secret", b"stale"));

    // Both survive a message; the 401 carries an MD5 challenge with the next nonce.
    for cred in [basic, md5] {
        let scheme = cred.scheme;
        let msg = SyncMessage {
            header: header(1, false, Some(cred)),
            body: vec![SyncCommand::Status(Status {
                cmd_id: 1,
                msg_ref: 1,
                cmd_ref: 0,
                cmd: "SyncHdr".into(),
                target_ref: None,
                source_ref: None,
                chal: Some(Chal::md5(b"next".to_vec())),
                data: codes::INVALID_CREDENTIALS,
                items: vec![],
            })],
            final_: true,
        };
        let xml = msg.to_xml();
        assert!(xml.contains(&format!(
            "<Type xmlns=\"syncml:metinf\">{}</Type>",
            scheme.as_str()
        )));
        assert!(xml.contains(&format!(
            "<NextNonce xmlns=\"syncml:metinf\">{}</NextNonce>",
            B64.encode("next")
        )));
        assert_eq!(SyncMessage::from_xml(xml.as_bytes()).unwrap(), msg);
    }
    assert_eq!(AuthScheme::Md5.as_str(), "syncml:auth-md5");
}

#[test]
fn refuses_bad_credentials_and_challenges() {
    let base = SyncMessage {
        header: header(1, false, Some(Cred::basic("a", "b"))),
        body: vec![],
        final_: true,
    }
    .to_xml();
    let bad_type = base.replace("syncml:auth-basic", "syncml:auth-MAC");
    assert_eq!(
        SyncMessage::from_xml(bad_type.as_bytes()),
        Err(DecodeError::InvalidField {
            field: "SyncML/SyncHdr/Cred/Meta/Type".into(),
            reason: "unsupported scheme `syncml:auth-MAC`".into()
        })
    );
    let bad_b64 = base.replace(&B64.encode("a:b"), "!!");
    assert!(matches!(
        SyncMessage::from_xml(bad_b64.as_bytes()),
        Err(DecodeError::InvalidField { field, .. }) if field == "SyncML/SyncHdr/Cred/Data"
    ));
}

#[test]
fn package0_encode_decode_verify_and_tampering() {
    let n = Notification {
        ui_mode: 3,
        ..Notification::new(0x1234, "dms1")
    };
    n.validate().unwrap();
    let bytes = n.encode("s-secret", b"srv-nonce");
    // 16-byte digest, then 0x03 | 0b00_11_1_000 | 0 0 0 | 0x12 0x34 | 4 | "dms1".
    assert_eq!(
        &bytes[16..],
        &[0x03, 0x38, 0, 0, 0, 0x12, 0x34, 4, b'd', b'm', b's', b'1']
    );
    let (back, digest) = Notification::decode(&bytes).unwrap();
    assert_eq!(back, n);
    // Digest computed independently.
    let server = B64.encode(Md5::digest(b"dms1:s-secret"));
    let trigger = B64.encode(Md5::digest(&bytes[16..]));
    let want: [u8; 16] = Md5::digest(format!("{server}:srv-nonce:{trigger}").as_bytes()).into();
    assert_eq!(digest, want);
    assert!(Notification::verify_digest(
        &bytes,
        "s-secret",
        b"srv-nonce"
    ));
    assert!(!Notification::verify_digest(&bytes, "other", b"srv-nonce"));
    assert!(!Notification::verify_digest(
        &bytes,
        "s-secret",
        b"old-nonce"
    ));
    // Flipping any bit is detected (or makes the notification undecodable).
    for i in 0..bytes.len() * 8 {
        let mut t = bytes.clone();
        t[i / 8] ^= 1 << (i % 8);
        assert!(
            !Notification::verify_digest(&t, "s-secret", b"srv-nonce"),
            "bit {i}"
        );
    }
    // A vendor-specific trailer is covered by the digest too.
    let v = Notification {
        vendor: vec![9, 9],
        ..n
    };
    let vb = v.encode("s-secret", b"srv-nonce");
    assert_eq!(Notification::decode(&vb).unwrap().0, v);
    assert!(!Notification::verify_digest(
        &vb[..vb.len() - 1],
        "s-secret",
        b"srv-nonce"
    ));
}

proptest! {
    /// Decoding never panics, whatever the bytes.
    #[test]
    fn decoding_never_panics(cut in 0usize..4000, flip in 0usize..4000, byte in any::<u8>(),
                             noise in proptest::collection::vec(any::<u8>(), 0..64)) {
        let xml = server_package(&operations()).to_xml().into_bytes();
        let mut m = xml.clone();
        let at = flip % m.len();
        m[at] = byte;
        m.truncate(cut.max(at + 1).min(m.len()));
        if let Ok(msg) = SyncMessage::from_xml(&m) {
            for c in &msg.body {
                let _ = client_command_from(c);
                let _ = command_output_from(c, msg.body.last());
            }
        }
        let _ = SyncMessage::from_xml(&noise);
        let _ = Notification::decode(&noise);
        let _ = Notification::verify_digest(&noise, "p", b"n");
        let item = Item { data: Some(String::from_utf8_lossy(&noise).into_owned()), ..Item::target("./A?prop=ACL") };
        let _ = client_command_from(&SyncCommand::Replace(dmdelegate::syncml::ItemCommand {
            cmd_id: 1, meta: None, items: vec![item],
        }));
    }
}

#[test]
fn the_device_log_records_every_command_until_it_is_turned_off() {
    let d = SimDevice::new(DeviceInfo {
        device_id: DEVICE.into(),
        manufacturer: "Acme".into(),
        model: "R1".into(),
    });
    let get = ClientCommand::GetAcl {
        uri: "./DMAcc".into(),
    };
    d.execute("dms1", &get).unwrap();
    assert_eq!(d.log(), ["dms1: Get ./DMAcc?prop=ACL -> 200"]);
    d.set_logging(false);
    d.execute("dms1", &get).unwrap();
    assert_eq!(d.log().len(), 1, "nothing logged while off: {:?}", d.log());
    d.set_logging(true);
    let _ = d.execute("dms2", &ClientCommand::Delete { uri: ".".into() });
    assert_eq!(d.log().len(), 2);
    assert!(d.log()[1].ends_with("-> 405"), "{:?}", d.log());
}
