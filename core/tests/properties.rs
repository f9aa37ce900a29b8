//! Property tests for the crate's data model and codecs: ACLs, TNDS trees, DM accounts and
//! delegation messages.
//!
//! Every generator produces values that are *valid* by the crate's own rules (and, for the
//! XML codecs, values whose text survives the decoder's trimming of element text), so the
//! round-trip properties can demand exact equality. The robustness properties feed the
//! decoders arbitrary or mutated input and only require a clean `Ok`/`Err(DecodeError)`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, subsequence, Index};
use proptest::string::string_regex;

use dmdelegate::acl::{validate_server_id, Acl, AclCommand, Grantees};
use dmdelegate::dmacc::{AddrType, AppAddr, AppAuth, AuthLevel, AuthType, DmAcc};
use dmdelegate::message::{
    Body, DelegatedSubtree, DelegationInfo, DelegationType, DeviceInfo, Header, Message, Method,
    Notif, Reason, Timestamp,
};
use dmdelegate::tree::{Format, MgmtTree, Node, NodeType, RtProperties};
use dmdelegate::DecodeError;

/// Cases per property; the whole file runs in a few seconds in a debug build.
const CASES: u32 = 256;

/// 256 cases per property. Failures are not persisted to a regressions file next to this
/// one: proptest prints the minimal failing input, and the tree stays clean.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A strategy for strings matching `pattern` (a proptest regex).
fn re(pattern: &str) -> proptest::string::RegexGeneratorStrategy<String> {
    string_regex(pattern).expect("valid generator regex")
}

// ---------------------------------------------------------------------------------------
// Shared text generators
// ---------------------------------------------------------------------------------------

/// Printable text of up to `max` characters: no control characters and no leading or
/// trailing white space (the XML decoders trim element text), but XML specials (`<&>"'`),
/// inner spaces and arbitrary non-ASCII characters are welcome. May be empty.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        re(&format!("[A-Za-z0-9 <>&\"'=;#/-]{{0,{max}}}")),
        re(&format!("\\PC{{0,{max}}}")),
    ]
    .prop_map(|s| s.trim().to_string())
}

/// Like [`text`], but never empty.
fn nonempty_text(max: usize) -> impl Strategy<Value = String> {
    text(max).prop_filter("non-empty", |s| !s.is_empty())
}

/// A valid ServerID: mostly host-like ASCII, sometimes any printable characters other than
/// the ACL separators `& = + *` and white space.
fn server_id() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => re("[A-Za-z][A-Za-z0-9._:<>'\"-]{0,11}"),
        1 => re("[^&=+*\\s\\p{C}]{1,8}"),
    ]
}

/// A DM Tree node name (one URI segment).
fn node_name() -> impl Strategy<Value = String> {
    re("[A-Za-z0-9_]{1,8}")
}

/// An absolute DM Tree URI: `.` or `./A/B/...` with up to four segments.
fn tree_uri() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(".".to_string()),
        6 => vec(re("[A-Za-z0-9_<>&'\"%-]{1,8}"), 1..=4).prop_map(|s| format!("./{}", s.join("/"))),
    ]
}

/// A timestamp with millisecond precision between 2000-01-01 and 2100-01-01, sometimes on a
/// whole second (printed without a fraction).
fn timestamp() -> impl Strategy<Value = Timestamp> {
    const Y2000: i64 = 946_684_800_000;
    const Y2100: i64 = 4_102_444_800_000;
    prop_oneof![
        (Y2000..Y2100).prop_map(Timestamp),
        (Y2000..Y2100).prop_map(|ms| Timestamp(ms / 1000 * 1000)),
    ]
}

/// Keeps the first occurrence of every item.
fn dedup(items: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(i) {
            out.push(i.clone());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// 1–2. ACLs
// ---------------------------------------------------------------------------------------

/// The reference model of an ACL: for each command present, `None` means `*` and
/// `Some(ids)` the named ServerIDs in first-mention order.
#[derive(Debug, Clone)]
struct AclModel(BTreeMap<AclCommand, Option<Vec<String>>>);

impl AclModel {
    fn permits(&self, cmd: AclCommand, id: &str) -> bool {
        match self.0.get(&cmd) {
            None => false,
            Some(None) => true,
            Some(Some(ids)) => ids.iter().any(|i| i == id),
        }
    }

    /// The canonical text: commands in `AclCommand::ALL` order (the `BTreeMap` order).
    fn canonical(&self) -> String {
        self.0
            .iter()
            .map(|(cmd, g)| match g {
                None => format!("{cmd}=*"),
                Some(ids) => format!("{cmd}={}", ids.join("+")),
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Every ServerID named anywhere in the ACL.
    fn named_ids(&self) -> Vec<String> {
        let all: Vec<String> = self.0.values().flatten().flatten().cloned().collect();
        dedup(&all)
    }
}

/// A valid ACL as `(model, text)`: the text lists the entries in random order and may
/// repeat a ServerID within an entry, so it is valid but usually not canonical.
#[derive(Debug, Clone)]
struct AclCase {
    model: AclModel,
    text: String,
}

impl AclCase {
    fn acl(&self) -> Acl {
        Acl::parse(&self.text).expect("generated ACL text is valid")
    }
}

prop_compose! {
    /// The grantees of one entry as written: `None` for `*`, else 1–3 ServerIDs (perhaps
    /// with a repeat, which the parser must collapse).
    fn written_grantees()(
        any_server in prop::bool::weighted(0.25),
        ids in vec(server_id(), 1..=3),
        repeat in prop::bool::weighted(0.2),
    ) -> Option<Vec<String>> {
        if any_server {
            None
        } else if repeat {
            let mut ids = ids;
            ids.push(ids[0].clone());
            Some(ids)
        } else {
            Some(ids)
        }
    }
}

prop_compose! {
    /// A random subset of the commands, each with `*` or some ServerIDs, written in a
    /// random entry order.
    fn acl_case()(
        entries in vec((select(AclCommand::ALL.to_vec()), written_grantees(), any::<u32>()), 0..=7),
    ) -> AclCase {
        let mut model = BTreeMap::new();
        let mut written = Vec::new();
        for (cmd, grantees, order_key) in entries {
            if model.contains_key(&cmd) {
                continue;
            }
            model.insert(cmd, grantees.as_deref().map(dedup));
            written.push((order_key, cmd, grantees));
        }
        written.sort_by_key(|(key, _, _)| *key);
        let text = written
            .iter()
            .map(|(_, cmd, g)| match g {
                None => format!("{cmd}=*"),
                Some(ids) => format!("{cmd}={}", ids.join("+")),
            })
            .collect::<Vec<_>>()
            .join("&");
        AclCase { model: AclModel(model), text }
    }
}

prop_compose! {
    /// A valid ACL with a ServerID to act on: half the time one the ACL already names (when
    /// it names any), otherwise a fresh one (which may still collide by chance).
    fn acl_and_id()(case in acl_case(), fresh in server_id(), pick in any::<Index>(), reuse in any::<bool>()) -> (AclCase, String) {
        let named = case.model.named_ids();
        let id = if reuse && !named.is_empty() { named[pick.index(named.len())].clone() } else { fresh };
        (case, id)
    }
}

/// ServerIDs worth probing an ACL with: every one it names plus some strangers.
fn probe_ids(model: &AclModel, extra: &[String]) -> Vec<String> {
    let mut ids = model.named_ids();
    ids.extend(extra.iter().cloned());
    dedup(&ids)
}

/// Text built from the ACL alphabet: command names, separators, `*`, spaces and junk
/// words, so the parser is driven down every branch (and not only rejected at once).
fn acl_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        select(vec![
            "Add", "Delete", "Exec", "Get", "Replace", "=", "&", "+", "*", " ", "\t", "A", "B",
        ])
        .prop_map(str::to_string),
        re("[A-Za-z=&+*]{1,4}"),
    ];
    prop_oneof![
        re("[A-Za-z=&+*]{0,40}"),
        vec(token, 0..16).prop_map(|t| t.concat()),
    ]
}

/// What the ACL parser may return for any input: a canonical ACL, or an `InvalidField`
/// error about the `ACL` field. Never a panic, never another error kind.
fn check_acl_parse_outcome(s: &str) -> Result<(), TestCaseError> {
    match Acl::parse(s) {
        Ok(acl) => {
            let printed = acl.to_string();
            prop_assert_eq!(Acl::parse(&printed), Ok(acl.clone()), "reprint of {:?}", s);
            prop_assert_eq!(
                Acl::parse(&printed).map(|a| a.to_string()),
                Ok(printed),
                "printing is not canonical"
            );
        }
        Err(DecodeError::InvalidField { field, .. }) => prop_assert_eq!(field, "ACL"),
        Err(other) => prop_assert!(false, "unexpected error kind for {:?}: {:?}", s, other),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Guards the ACL text codec: a valid ACL (entries in any order, repeated ServerIDs)
    /// parses to exactly the model, prints canonically (commands in `ALL` order, ids in
    /// first-mention order without repeats) and re-parses to the same value.
    #[test]
    fn acl_parse_print_round_trip(case in acl_case()) {
        let acl = case.acl();
        prop_assert_eq!(acl.is_empty(), case.model.0.is_empty());
        let printed = acl.to_string();
        prop_assert_eq!(&printed, &case.model.canonical());
        prop_assert_eq!(Acl::parse(&printed), Ok(acl.clone()));
        // Canonical: parse ∘ print is the identity from here on.
        prop_assert_eq!(Acl::parse(&printed).unwrap().to_string(), printed);
        // Surrounding white space is layout, not content.
        prop_assert_eq!(Acl::parse(&format!("  {}\t", case.text)), Ok(acl.clone()));
        for cmd in AclCommand::ALL {
            let expected = case.model.0.get(&cmd).map(|g| match g {
                None => Grantees::Any,
                Some(ids) => Grantees::Servers(ids.clone()),
            });
            prop_assert_eq!(acl.grantees(cmd), expected.as_ref());
        }
    }

    /// Guards ACL evaluation: `permits` and `commands_naming` agree with the model for every
    /// command and for named and unnamed ServerIDs alike.
    #[test]
    fn acl_permits_matches_model(case in acl_case(), strangers in vec(server_id(), 0..3)) {
        let acl = case.acl();
        for id in probe_ids(&case.model, &strangers) {
            for cmd in AclCommand::ALL {
                prop_assert_eq!(acl.permits(cmd, &id), case.model.permits(cmd, &id), "{} {}", cmd, id);
            }
            let naming: Vec<AclCommand> = case
                .model
                .0
                .iter()
                .filter(|(_, g)| g.as_ref().is_some_and(|ids| ids.contains(&id)))
                .map(|(c, _)| *c)
                .collect();
            prop_assert_eq!(acl.commands_naming(&id), naming);
        }
    }

    /// Guards `grant`: afterwards the grantee holds the command, every other
    /// (command, ServerID) pair is unchanged, granting twice changes nothing, and the result
    /// still prints to text that parses back to it.
    #[test]
    fn acl_grant_adds_exactly_one_permission(
        (case, id) in acl_and_id(),
        cmd in select(AclCommand::ALL.to_vec()),
        strangers in vec(server_id(), 0..3),
    ) {
        let before = case.acl();
        let mut after = before.clone();
        after.grant(cmd, &id);
        prop_assert!(after.permits(cmd, &id));
        let mut probes = probe_ids(&case.model, &strangers);
        probes.push(id.clone());
        for s in &probes {
            for c in AclCommand::ALL {
                if (c, s.as_str()) != (cmd, id.as_str()) {
                    prop_assert_eq!(after.permits(c, s), before.permits(c, s), "{} {}", c, s);
                }
            }
        }
        let mut twice = after.clone();
        twice.grant(cmd, &id);
        prop_assert_eq!(&twice, &after);
        prop_assert_eq!(Acl::parse(&after.to_string()), Ok(after));
    }

    /// Guards `scrub`: afterwards no entry names the ServerID, every `*` entry is untouched,
    /// other ServerIDs keep exactly their permissions, and the result still round-trips.
    #[test]
    fn acl_scrub_removes_only_the_server(
        (case, id) in acl_and_id(),
        strangers in vec(server_id(), 0..3),
    ) {
        let before = case.acl();
        let mut after = before.clone();
        after.scrub(&id);
        prop_assert!(after.commands_naming(&id).is_empty());
        for cmd in AclCommand::ALL {
            let was_any = before.grantees(cmd) == Some(&Grantees::Any);
            prop_assert_eq!(after.grantees(cmd) == Some(&Grantees::Any), was_any);
            prop_assert_eq!(after.permits(cmd, &id), was_any);
            if let Some(Grantees::Servers(ids)) = after.grantees(cmd) {
                prop_assert!(!ids.is_empty(), "scrub left an entry naming nobody");
            }
        }
        for s in probe_ids(&case.model, &strangers).iter().filter(|s| **s != id) {
            for cmd in AclCommand::ALL {
                prop_assert_eq!(after.permits(cmd, s), before.permits(cmd, s), "{} {}", cmd, s);
            }
        }
        prop_assert_eq!(Acl::parse(&after.to_string()), Ok(after));
    }

    /// Guards the ACL parser against arbitrary text: it never panics, and either accepts
    /// (and then prints canonically) or reports an invalid `ACL` field.
    #[test]
    fn acl_parser_total_on_any_text(s in re(".*")) {
        check_acl_parse_outcome(&s)?;
    }

    /// As above, for text built from the ACL alphabet, which reaches deep into the parser.
    #[test]
    fn acl_parser_total_on_acl_alphabet(s in acl_soup()) {
        check_acl_parse_outcome(&s)?;
    }

    /// Guards the ServerID generator itself: everything it produces is a valid ServerID
    /// (so the other properties really test valid input).
    #[test]
    fn generated_server_ids_are_valid(id in server_id()) {
        prop_assert_eq!(validate_server_id(&id), Ok(()));
    }
}

// ---------------------------------------------------------------------------------------
// 3. TNDS trees
// ---------------------------------------------------------------------------------------

prop_compose! {
    /// A non-empty ACL for a node (an empty one is written as "no ACL").
    fn node_acl()(case in acl_case().prop_filter("non-empty ACL", |c| !c.model.0.is_empty())) -> Acl {
        case.acl()
    }
}

fn node_type() -> impl Strategy<Value = NodeType> {
    prop_oneof![
        prop_oneof![Just("text/plain".to_string()), text(20)].prop_map(NodeType::Mime),
        prop_oneof![Just(String::new()), text(20)].prop_map(NodeType::DdfName),
    ]
}

prop_compose! {
    /// Run-time properties with every optional field independently present or absent.
    fn rt_properties()(
        acl in prop::option::of(node_acl()),
        format in prop::option::of(select(Format::ALL.to_vec())),
        name in prop::option::of(text(16)),
        size in prop::option::of(any::<u64>()),
        title in prop::option::of(text(16)),
        tstamp in prop::option::of(text(24)),
        node_type in node_type(),
        ver_no in prop::option::of(text(8)),
    ) -> RtProperties {
        RtProperties { acl, format, name, size, title, tstamp, node_type, ver_no }
    }
}

prop_compose! {
    /// A leaf: perhaps properties, perhaps a value (printable, XML specials included).
    fn leaf_node()(
        name in node_name(),
        props in prop::option::of(rt_properties()),
        value in prop::option::of(text(30)),
    ) -> Node {
        Node { name, path: None, props, children: Vec::new(), value }
    }
}

/// A subtree at most four levels deep; interior nodes have 1–4 children and no value.
fn node() -> impl Strategy<Value = Node> {
    leaf_node().prop_recursive(3, 24, 4, |inner| {
        (
            node_name(),
            prop::option::of(rt_properties()),
            vec(inner, 1..=4),
        )
            .prop_map(|(name, props, children)| Node {
                name,
                path: None,
                props,
                children,
                value: None,
            })
    })
}

prop_compose! {
    /// A top-level node, perhaps with the `Path` of its parent.
    fn top_node()(node in node(), path in prop::option::of(tree_uri())) -> Node {
        Node { path, ..node }
    }
}

prop_compose! {
    /// A TNDS object with 1–3 top-level nodes.
    fn mgmt_tree()(
        man in prop::option::of(text(16)),
        model in prop::option::of(text(16)),
        nodes in vec(top_node(), 1..=3),
    ) -> MgmtTree {
        MgmtTree { man, model, ..MgmtTree::new(nodes) }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Guards the TNDS codec: any tree of valid names, properties, ACLs and printable values
    /// (XML specials included) survives encoding and decoding unchanged.
    #[test]
    fn tnds_round_trip(tree in mgmt_tree()) {
        let xml = tree.to_xml();
        prop_assert_eq!(MgmtTree::from_xml(xml.as_bytes()), Ok(tree), "{}", xml);
    }

    /// Guards the documented promise that leaf values keep their exact text: spaces, tabs
    /// and line feeds, leading and trailing ones included, are not trimmed.
    #[test]
    fn tnds_values_keep_layout_white_space(
        name in node_name(),
        value in re("[ \t\na-z<&>]{0,20}"),
    ) {
        let tree = MgmtTree::new(vec![Node::leaf(name, value)]);
        prop_assert_eq!(MgmtTree::from_xml(tree.to_xml().as_bytes()), Ok(tree));
    }

    /// The same promise for carriage returns (`"a\rb"`, `"\r\n"`): the writer emits a raw
    /// CR, which every XML 1.0 reader (this crate's included) must normalize to LF, so the
    /// value comes back changed. Writing `&#13;` instead would keep it.
    #[test]
    fn tnds_values_keep_carriage_returns(
        name in node_name(),
        value in re("[a-z \r\n]{0,8}\r[a-z \r\n]{0,8}"),
    ) {
        let tree = MgmtTree::new(vec![Node::leaf(name, value)]);
        prop_assert_eq!(MgmtTree::from_xml(tree.to_xml().as_bytes()), Ok(tree));
    }
}

// ---------------------------------------------------------------------------------------
// 4. DM accounts
// ---------------------------------------------------------------------------------------

/// A valid server address of any type, with 0–2 ports.
fn app_addr() -> impl Strategy<Value = AppAddr> {
    let addr = prop_oneof![
        (
            select(vec!["https", "http", "obex"]),
            re("[a-z0-9][a-z0-9.-]{0,11}"),
            re("(/[A-Za-z0-9._~%&=?-]{0,8}){0,3}"),
        )
            .prop_map(|(scheme, host, path)| (format!("{scheme}://{host}{path}"), AddrType::Uri)),
        any::<Ipv4Addr>().prop_map(|a| (a.to_string(), AddrType::Ipv4)),
        any::<Ipv6Addr>().prop_map(|a| (a.to_string(), AddrType::Ipv6)),
    ];
    (addr, vec(any::<u16>(), 0..=2)).prop_map(|((addr, addr_type), ports)| AppAddr {
        addr,
        addr_type,
        ports,
    })
}

prop_compose! {
    /// One set of credentials, each optional text present or not.
    fn app_auth()(
        level in select(AuthLevel::ALL),
        auth_type in select(AuthType::ALL),
        name in prop::option::of(text(16)),
        secret in prop::option::of(text(16)),
        data in prop::option::of(text(24)),
    ) -> AppAuth {
        AppAuth { level, auth_type, name, secret, data }
    }
}

prop_compose! {
    /// A DM account that passes `DmAcc::validate`.
    fn dm_acc()(
        node_name in re("[A-Za-z0-9_-]{1,10}"),
        server_id in server_id(),
        name in prop::option::of(text(16)),
        pref_con_ref in prop::option::of(text(16)),
        addresses in vec(app_addr(), 1..=3),
        auth_pref in prop::option::of(text(12)),
        auths in vec(app_auth(), 0..=3),
    ) -> DmAcc {
        DmAcc { node_name, server_id, name, pref_con_ref, addresses, auth_pref, auths }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Guards the DMAcc MO mapping: a valid account survives `to_node`/`from_node`, both in
    /// memory and through a TNDS document placed under `./DMAcc`.
    #[test]
    fn dmacc_round_trip(acc in dm_acc()) {
        prop_assert_eq!(acc.validate(), Ok(()));
        let node = acc.to_node();
        prop_assert_eq!(DmAcc::from_node(&node), Ok(acc.clone()));

        let tree = MgmtTree::new(vec![Node { path: Some("./DMAcc".into()), ..node }]);
        let decoded = MgmtTree::from_xml(tree.to_xml().as_bytes());
        prop_assert_eq!(&decoded, &Ok(tree));
        prop_assert_eq!(DmAcc::from_node(&decoded.unwrap().nodes[0]), Ok(acc));
    }
}

// ---------------------------------------------------------------------------------------
// 5. Messages
// ---------------------------------------------------------------------------------------

prop_compose! {
    /// A header with a valid session id, distinct sender and recipient.
    fn header()(
        session_id in re("[A-Za-z0-9._-]{1,64}"),
        seq in 1..=u32::MAX,
        (sender, recipient) in (server_id(), server_id()).prop_filter("distinct peers", |(a, b)| a != b),
        method in select(Method::ALL.to_vec()),
        timestamp in timestamp(),
    ) -> Header {
        Header { session_id, seq, sender, recipient, method, timestamp }
    }
}

prop_compose! {
    /// 1–4 delegated subtrees with distinct URIs, each with a sorted, non-empty set of rights.
    fn subtrees()(
        uris in prop::collection::btree_set(tree_uri(), 1..=4).prop_map(|s| s.into_iter().collect::<Vec<_>>()).prop_shuffle(),
        rights in vec(subsequence(AclCommand::ALL.to_vec(), 1..=5), 4),
    ) -> Vec<DelegatedSubtree> {
        uris.into_iter().zip(rights).map(|(uri, rights)| DelegatedSubtree { uri, rights }).collect()
    }
}

prop_compose! {
    /// A DELEGATION_NOTIF body; `Expires` only on a Partial delegation. The DMServerID is
    /// a placeholder that [`message`] replaces with the header's sender.
    fn notif()(
        delegation_type in select(vec![DelegationType::Full, DelegationType::Partial]),
        expires in prop::option::of(timestamp()),
        device_id in nonempty_text(40),
        manufacturer in nonempty_text(40),
        model in nonempty_text(40),
        subtrees in subtrees(),
    ) -> Notif {
        Notif {
            dm_server_id: String::new(),
            delegation_type,
            info: DelegationInfo {
                device: DeviceInfo { device_id, manufacturer, model },
                subtrees,
            },
            expires: expires.filter(|_| delegation_type == DelegationType::Partial),
        }
    }
}

prop_compose! {
    /// A reason with a code from 100 to 999 and printable text (possibly empty).
    fn reason()(code in 100u16..=999, text in text(60)) -> Reason {
        Reason { code, text }
    }
}

/// An `https://` URL with a host and perhaps a path, query and fragment.
fn https_url() -> impl Strategy<Value = String> {
    (
        re("[a-z0-9][a-z0-9.-]{0,11}(:[0-9]{1,5})?"),
        re("(/[A-Za-z0-9._~%-]{0,8}){0,3}(\\?[a-z]=[A-Za-z0-9&=]{0,8})?(#[a-z]{0,4})?"),
    )
        .prop_map(|(host, rest)| format!("https://{host}{rest}"))
}

/// Every body kind, about equally often.
fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        notif().prop_map(Body::Notif),
        Just(Body::Ack),
        reason().prop_map(Body::Nack),
        dm_acc().prop_map(Body::Start),
        Just(Body::Prepared),
        Just(Body::Confirm),
        reason().prop_map(Body::Failure),
        Just(Body::BootstrapUrlRequest),
        https_url().prop_map(Body::BootstrapUrl),
    ]
}

prop_compose! {
    /// A valid message of any kind.
    fn message()(header in header(), body in body()) -> Message {
        let body = match body {
            Body::Notif(n) => Body::Notif(Notif { dm_server_id: header.sender.clone(), ..n }),
            other => other,
        };
        Message { header, body }
    }
}

/// One way to break a valid DELEGATION_NOTIF message, with the field the error must name.
fn break_notif(m: &mut Message, how: usize) -> String {
    let Body::Notif(n) = &mut m.body else {
        unreachable!("only Notif messages are broken")
    };
    let here = "Delegation/Notif";
    match how {
        0 => {
            m.header.seq = 0;
            "Delegation/Header/Seq".into()
        }
        1 => {
            m.header.session_id = "no spaces allowed".into();
            "Delegation/Header/SessionID".into()
        }
        2 => {
            m.header.recipient = m.header.sender.clone();
            "Delegation/Header/Recipient".into()
        }
        3 => {
            n.dm_server_id = m.header.recipient.clone();
            format!("{here}/DMServerID")
        }
        4 => {
            n.delegation_type = DelegationType::Full;
            n.expires = Some(m.header.timestamp);
            format!("{here}/Expires")
        }
        5 => {
            n.info.device.device_id = String::new();
            format!("{here}/DelInfo/Device/DevID")
        }
        6 => {
            n.info.subtrees.clear();
            format!("{here}/DelInfo/Subtree")
        }
        7 => {
            n.info.subtrees[0].rights.clear();
            format!("{here}/DelInfo/Subtree[1]/Rights")
        }
        8 => {
            // A repeat (or, with two or more rights, also a reversal) breaks the order.
            let rights = &mut n.info.subtrees[0].rights;
            rights.reverse();
            rights.push(rights[0]);
            format!("{here}/DelInfo/Subtree[1]/Rights")
        }
        _ => {
            let again = n.info.subtrees[0].clone();
            n.info.subtrees.push(again);
            format!("{here}/DelInfo/Subtree[{}]/URI", n.info.subtrees.len())
        }
    }
}

prop_compose! {
    /// A valid DELEGATION_NOTIF message.
    fn notif_message()(header in header(), notif in notif()) -> Message {
        let notif = Notif { dm_server_id: header.sender.clone(), ..notif };
        Message { header, body: Body::Notif(notif) }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Guards the validation rules: breaking any one rule of a valid DELEGATION_NOTIF (seq 0,
    /// bad session id, sender = recipient, DMServerID ≠ sender, Expires on a Full
    /// delegation, empty device field, no subtrees, empty or unsorted rights, a URI delegated
    /// twice) makes `validate` fail naming that field, and decoding the encoded message
    /// fails with the same error.
    #[test]
    fn message_validate_rejects_each_broken_rule(mut m in notif_message(), how in 0usize..10) {
        let field = break_notif(&mut m, how);
        let err = m.validate().expect_err("broken message must not validate");
        match &err {
            DecodeError::InvalidField { field: f, .. } | DecodeError::MissingField { field: f } => {
                prop_assert_eq!(f, &field)
            }
            other => prop_assert!(false, "unexpected error {:?}", other),
        }
        prop_assert_eq!(Message::from_xml(m.to_xml().as_bytes()), Err(err));
    }

    /// Guards the message model and wire format together: every generated message is valid
    /// and survives `to_xml`/`from_xml` (which re-validates) unchanged, for every body kind.
    #[test]
    fn message_validates_and_round_trips(m in message()) {
        prop_assert_eq!(m.validate(), Ok(()));
        let xml = m.to_xml();
        prop_assert_eq!(Message::from_xml(xml.as_bytes()), Ok(m), "{}", xml);
    }

    /// Guards timestamp formatting: millisecond timestamps print as RFC 3339 and parse back
    /// to the same instant.
    #[test]
    fn timestamp_rfc3339_round_trip(t in timestamp()) {
        prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Ok(t));
    }
}

// ---------------------------------------------------------------------------------------
// 6. Decoder robustness
// ---------------------------------------------------------------------------------------

/// One edit of an encoded document.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR the byte at the position with a non-zero mask.
    Flip(Index, u8),
    /// Insert a byte before the position.
    Insert(Index, u8),
    /// Delete the byte at the position.
    Delete(Index),
}

/// Bytes worth inserting: XML syntax, white space, a control character and a UTF-8 lead
/// byte, as well as anything at all.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![select(b"<>/&;#=\"' \t\r\n\0x\xc3".to_vec()), any::<u8>(),]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        (any::<Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Flip(i, mask) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] ^= mask;
            }
            Mutation::Insert(i, b) => {
                let i = i.index(bytes.len() + 1);
                bytes.insert(i, *b);
            }
            Mutation::Delete(i) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes.remove(i);
            }
            _ => {}
        }
    }
    bytes
}

/// XML-flavoured noise: fragments of the real vocabulary glued together at random.
fn xml_soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        select(vec![
            "<",
            ">",
            "</",
            "/>",
            "<?xml version=\"1.0\"?>",
            "<!DOCTYPE x>",
            "<!-- c -->",
            "<![CDATA[x]]>",
            "&amp;",
            "&#65;",
            "&#x0;",
            "&foo;",
            "&",
            "Delegation",
            "MgmtTree",
            "Node",
            "NodeName",
            "Value",
            "Header",
            " xmlns=\"urn:dmdelegate:params:xml:ns:delegation-1\"",
            " xmlns=\"syncml:dmddf1.2\"",
            " version=\"1.0\"",
            " xmlns:p=\"urn:x\"",
            "p:",
            "<VerDTD>1.2</VerDTD>",
            "<Seq>1</Seq>",
            "\"",
            " ",
        ])
        .prop_map(str::to_string),
        re("[A-Za-z0-9 ]{1,6}"),
    ];
    vec(token, 0..40).prop_map(|t| t.concat().into_bytes())
}

/// Element names of both schemas, so random documents hit the typed mappers' checks.
const VOCABULARY: &[&str] = &[
    "Header",
    "SessionID",
    "Seq",
    "Sender",
    "Recipient",
    "Method",
    "Timestamp",
    "Notif",
    "DMServerID",
    "DelType",
    "DelInfo",
    "Device",
    "DevID",
    "Man",
    "Mod",
    "Subtree",
    "URI",
    "Rights",
    "Expires",
    "Res",
    "Ack",
    "Nack",
    "Code",
    "Text",
    "Start",
    "DMAcc",
    "MgmtTree",
    "Prepared",
    "Confirm",
    "Failure",
    "BootstrapURLRequest",
    "BootstrapURL",
    "URL",
    "VerDTD",
    "Node",
    "NodeName",
    "Path",
    "RTProperties",
    "ACL",
    "Format",
    "chr",
    "node",
    "Name",
    "Size",
    "Title",
    "TStamp",
    "Type",
    "MIME",
    "DDFName",
    "VerNo",
    "Value",
    "Bogus",
];

/// Element text the mappers care about: numbers, ids, URIs, ACLs, dates, enum values.
const TEXTS: &[&str] = &[
    "",
    " ",
    "0",
    "1",
    "4",
    "70000",
    "1.2",
    "A",
    "B",
    "S1",
    "w7",
    "Full",
    "Partial",
    "Get Replace",
    "Replace Get",
    "Fly",
    "./A",
    "./DMAcc",
    ".",
    "A/B",
    "Get=*",
    "Add=A&amp;Add=B",
    "2030-01-01T00:00:00Z",
    "2030-13-01T00:00:00Z",
    "https://x/",
    "http://x/",
    "URI",
    "IPv4",
    "1.2.3.4",
    "CLCRED",
    "BASIC",
    "999",
    "&amp;&lt;",
    "&#13;",
];

/// A well-formed XML element from the vocabulary, nested up to four levels, as text.
fn vocabulary_element() -> impl Strategy<Value = String> {
    let leaf = (select(VOCABULARY), select(TEXTS), any::<bool>()).prop_map(|(n, t, empty)| {
        if empty && t.is_empty() {
            format!("<{n}/>")
        } else {
            format!("<{n}>{t}</{n}>")
        }
    });
    leaf.prop_recursive(3, 40, 6, |inner| {
        (select(VOCABULARY), vec(inner, 0..6))
            .prop_map(|(n, children)| format!("<{n}>{}</{n}>", children.concat()))
    })
}

/// A well-formed document whose root is a correctly namespaced `Delegation` or `MgmtTree`
/// holding random vocabulary elements, usually after a valid `Header` or `VerDTD`: it
/// passes the XML layer and exercises the mappers.
fn vocabulary_document() -> impl Strategy<Value = Vec<u8>> {
    const HEADER: &str = "<Header><SessionID>s</SessionID><Seq>1</Seq><Sender>A</Sender>\
        <Recipient>B</Recipient><Method>1</Method><Timestamp>2030-01-01T00:00:00Z</Timestamp>\
        </Header>";
    let root = select(vec![
        (
            "Delegation",
            " xmlns=\"urn:dmdelegate:params:xml:ns:delegation-1\" version=\"1.0\"",
            HEADER,
        ),
        (
            "MgmtTree",
            " xmlns=\"syncml:dmddf1.2\"",
            "<VerDTD>1.2</VerDTD>",
        ),
    ]);
    (root, any::<bool>(), vec(vocabulary_element(), 0..6)).prop_map(
        |((name, attrs, prelude), with_prelude, children)| {
            let prelude = if with_prelude { prelude } else { "" };
            format!("<{name}{attrs}>{prelude}{}</{name}>", children.concat()).into_bytes()
        },
    )
}

/// Decodes `bytes` as a message; when it is accepted it must be valid and a fixpoint
/// (encoding what was decoded decodes to the same message).
fn check_message_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = Message::from_xml(bytes) {
        prop_assert_eq!(m.validate(), Ok(()));
        prop_assert_eq!(Message::from_xml(m.to_xml().as_bytes()), Ok(m));
    }
    Ok(())
}

/// Decodes `bytes` as a TNDS tree; when it is accepted it must be a fixpoint.
fn check_tree_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(t) = MgmtTree::from_xml(bytes) {
        prop_assert_eq!(MgmtTree::from_xml(t.to_xml().as_bytes()), Ok(t));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Guards the decoders against arbitrary bytes: no panic, only `Ok` or a `DecodeError`.
    #[test]
    fn decoders_total_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..512)) {
        check_message_decode(&bytes)?;
        check_tree_decode(&bytes)?;
    }

    /// As above, for text strings and for XML-flavoured noise, which get past the UTF-8
    /// check and into the XML reader and the typed mappers.
    #[test]
    fn decoders_total_on_xml_noise(s in re(".{0,200}"), soup in xml_soup()) {
        check_message_decode(s.as_bytes())?;
        check_tree_decode(s.as_bytes())?;
        check_message_decode(&soup)?;
        check_tree_decode(&soup)?;
    }

    /// As above, for well-formed documents of random vocabulary elements, which reach the
    /// typed mappers (missing, repeated, misplaced and ill-valued fields).
    #[test]
    fn decoders_total_on_random_documents(doc in vocabulary_document()) {
        check_message_decode(&doc)?;
        check_tree_decode(&doc)?;
    }

    /// Guards the message decoder against near-valid input: a valid message with a few bytes
    /// flipped, inserted or deleted decodes to `Ok` (valid, and stable under re-encoding)
    /// or to a `DecodeError`, never a panic.
    #[test]
    fn message_decoder_survives_mutations(m in message(), edits in vec(mutation(), 1..=4)) {
        let bytes = apply(m.to_xml().into_bytes(), &edits);
        check_message_decode(&bytes)?;
    }

    /// The same for TNDS documents.
    #[test]
    fn tnds_decoder_survives_mutations(tree in mgmt_tree(), edits in vec(mutation(), 1..=4)) {
        let bytes = apply(tree.to_xml().into_bytes(), &edits);
        check_tree_decode(&bytes)?;
    }
}
