//! The DM Account MO (`urn:oma:mo:oma-dm-dmacc:1.0`) as a typed, validated struct, and its
//! mapping to and from a TNDS subtree rooted at `./DMAcc/<X>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::acl::validate_server_id;
use crate::error::DecodeError;
use crate::tree::{Node, NodeType, RtProperties};
use crate::xml::{join, Path};

/// The DMAcc MO identifier (the DDF name of `./DMAcc/<X>`).
pub const DMACC_MO_ID: &str = "urn:oma:mo:oma-dm-dmacc:1.0";
/// `AppID` of every DM account.
pub const DMACC_APP_ID: &str = "w7";

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* $variant),* }

        impl $name {
            /// All values.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            /// The value as written in the DM Tree.
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $text),* } }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let all: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    format!("`{s}` is not one of {}", all.join(", "))
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

string_enum! {
    /// `AppAddr/<X>/AddrType`.
    AddrType { /** A URI (default). */ Uri = "URI", /** An IPv4 address. */ Ipv4 = "IPv4", /** An IPv6 address. */ Ipv6 = "IPv6" }
}

string_enum! {
    /// `AppAuth/<X>/AAuthLevel`.
    AuthLevel {
        /** Client credentials, client to server. */ ClCred = "CLCRED",
        /** Server credentials, server to client. */ SrvCred = "SRVCRED",
        /** OBEX. */ Obex = "OBEX",
        /** HTTP. */ Http = "HTTP",
    }
}

string_enum! {
    /// `AppAuth/<X>/AAuthType`.
    AuthType {
        /** HTTP Basic. */ HttpBasic = "HTTP-BASIC",
        /** HTTP Digest. */ HttpDigest = "HTTP-DIGEST",
        /** SyncML Basic. */ Basic = "BASIC",
        /** SyncML MD5 digest. */ Digest = "DIGEST",
        /** HMAC. */ Hmac = "HMAC",
        /** X.509. */ X509 = "X509",
        /** SecurID. */ SecurId = "SECURID",
        /** SafeWord. */ SafeWord = "SAFEWORD",
        /** Digipass. */ Digipass = "DIGIPASS",
        /** Transport-layer. */ Transport = "TRANSPORT",
    }
}

/// `AppAddr/<X>`: one server address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppAddr {
    /// `Addr`.
    pub addr: String,
    /// `AddrType`.
    pub addr_type: AddrType,
    /// `Port/<X>/PortNbr` values.
    pub ports: Vec<u16>,
}

/// `AppAuth/<X>`: one set of credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppAuth {
    /// `AAuthLevel`.
    pub level: AuthLevel,
    /// `AAuthType`.
    pub auth_type: AuthType,
    /// `AAuthName`.
    pub name: Option<String>,
    /// `AAuthSecret` (never returned by a Get).
    pub secret: Option<String>,
    /// `AAuthData` (never returned by a Get), for example a nonce, base64.
    pub data: Option<String>,
}

/// A DM account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmAcc {
    /// The `<X>` node name under `./DMAcc`.
    pub node_name: String,
    /// `ServerID`: the name the server has in ACLs.
    pub server_id: String,
    /// `Name`.
    pub name: Option<String>,
    /// `PrefConRef`.
    pub pref_con_ref: Option<String>,
    /// `AppAddr/<X>`, at least one.
    pub addresses: Vec<AppAddr>,
    /// `AAuthPref`.
    pub auth_pref: Option<String>,
    /// `AppAuth/<X>`.
    pub auths: Vec<AppAuth>,
}

fn invalid(field: String, reason: impl Into<String>) -> DecodeError {
    DecodeError::InvalidField {
        field,
        reason: reason.into(),
    }
}

impl DmAcc {
    /// Checks every field against the DMAcc MO's rules; the error names the field.
    pub fn validate(&self) -> Result<(), DecodeError> {
        // Field paths are formatted only for an error.
        let here = Path::Child(&Path::Text("DMAcc"), &self.node_name);
        if self.node_name.is_empty()
            || self.node_name.contains(['/', '?', '*'])
            || self.node_name.trim() != self.node_name
            || crate::xml::check_xml_text(&self.node_name).is_err()
        {
            return Err(invalid(
                here.to_string(),
                "node name must be one non-empty URI segment",
            ));
        }
        validate_server_id(&self.server_id).map_err(|r| invalid(join(&here, "ServerID"), r))?;
        for (name, value) in [
            ("ServerID", Some(&self.server_id)),
            ("Name", self.name.as_ref()),
            ("PrefConRef", self.pref_con_ref.as_ref()),
            ("AAuthPref", self.auth_pref.as_ref()),
        ] {
            if let Some(v) = value {
                crate::xml::check_xml_text(v).map_err(|r| invalid(join(&here, name), r))?;
            }
        }
        for (i, a) in self.auths.iter().enumerate() {
            for (name, value) in [
                ("AAuthName", &a.name),
                ("AAuthSecret", &a.secret),
                ("AAuthData", &a.data),
            ] {
                if let Some(v) = value {
                    crate::xml::check_xml_text(v)
                        .map_err(|r| invalid(format!("{here}/AppAuth/{}/{name}", i + 1), r))?;
                }
            }
        }
        if self.addresses.is_empty() {
            return Err(DecodeError::MissingField {
                field: join(&here, "AppAddr"),
            });
        }
        for (i, a) in self.addresses.iter().enumerate() {
            let ok = match a.addr_type {
                AddrType::Uri => a.addr.contains("://") && !a.addr.chars().any(char::is_whitespace),
                AddrType::Ipv4 => a.addr.parse::<std::net::Ipv4Addr>().is_ok(),
                AddrType::Ipv6 => a.addr.parse::<std::net::Ipv6Addr>().is_ok(),
            };
            if !ok {
                return Err(invalid(
                    format!("{here}/AppAddr/{}/Addr", i + 1),
                    format!("`{}` is not a valid {} address", a.addr, a.addr_type),
                ));
            }
        }
        Ok(())
    }

    /// The account as a TNDS subtree named [`DmAcc::node_name`] (its parent is `./DMAcc`).
    pub fn to_node(&self) -> Node {
        let mut children = vec![
            Node::leaf("AppID", DMACC_APP_ID),
            Node::leaf("ServerID", &self.server_id),
        ];
        if let Some(n) = &self.name {
            children.push(Node::leaf("Name", n));
        }
        if let Some(p) = &self.pref_con_ref {
            children.push(Node::leaf("PrefConRef", p));
        }
        let addrs = self
            .addresses
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut leaves = vec![
                    Node::leaf("Addr", &a.addr),
                    Node::leaf("AddrType", a.addr_type.as_str()),
                ];
                if !a.ports.is_empty() {
                    let ports = a
                        .ports
                        .iter()
                        .enumerate()
                        .map(|(j, p)| {
                            Node::interior(
                                (j + 1).to_string(),
                                vec![Node::leaf("PortNbr", p.to_string())],
                            )
                        })
                        .collect();
                    leaves.push(Node::interior("Port", ports));
                }
                Node::interior((i + 1).to_string(), leaves)
            })
            .collect();
        children.push(Node::interior("AppAddr", addrs));
        if let Some(p) = &self.auth_pref {
            children.push(Node::leaf("AAuthPref", p));
        }
        if !self.auths.is_empty() {
            let auths = self
                .auths
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let mut leaves = vec![
                        Node::leaf("AAuthLevel", a.level.as_str()),
                        Node::leaf("AAuthType", a.auth_type.as_str()),
                    ];
                    for (name, v) in [
                        ("AAuthName", &a.name),
                        ("AAuthSecret", &a.secret),
                        ("AAuthData", &a.data),
                    ] {
                        if let Some(v) = v {
                            leaves.push(Node::leaf(name, v));
                        }
                    }
                    Node::interior((i + 1).to_string(), leaves)
                })
                .collect();
            children.push(Node::interior("AppAuth", auths));
        }
        let mut root = Node::interior(&self.node_name, children);
        if let Some(p) = root.props.as_mut() {
            p.node_type = NodeType::DdfName(DMACC_MO_ID.into());
        }
        root
    }

    /// The TNDS document holding this account's one DMAcc node (what a host hands over).
    pub fn to_tnds(&self) -> String {
        crate::tree::MgmtTree::new(vec![self.to_node()]).to_xml()
    }

    /// Reads an account from a TNDS document holding its one DMAcc node, and validates it.
    pub fn from_tnds(document: &str) -> Result<Self, DecodeError> {
        Self::from_node(&crate::tree::MgmtTree::single_node_from_xml(
            document.as_bytes(),
        )?)
    }

    /// Reads an account from its TNDS subtree and validates it. Unknown children (such as
    /// `Ext`, `ToConRef`) are accepted and ignored.
    pub fn from_node(node: &Node) -> Result<Self, DecodeError> {
        let acc = Self::from_node_unchecked(node.clone())?;
        acc.validate()?;
        Ok(acc)
    }

    /// Reads an account from its TNDS subtree, taking its values, without
    /// [`DmAcc::validate`] (the message decoder validates the whole message once).
    pub(crate) fn from_node_unchecked(node: Node) -> Result<Self, DecodeError> {
        let Node {
            name: node_name,
            children,
            ..
        } = node;
        let here = Path::Child(&Path::Text("DMAcc"), &node_name);
        let mut fields = Fields::new(children);
        let app_id = fields.required("AppID", &here)?;
        if app_id != DMACC_APP_ID {
            return Err(invalid(
                join(&here, "AppID"),
                format!("`{app_id}` is not `{DMACC_APP_ID}`"),
            ));
        }
        let server_id = fields.required("ServerID", &here)?;
        let mut addresses = Vec::new();
        let addr_path = here.child("AppAddr");
        if let Some(list) = fields.take("AppAddr") {
            for a in list.children {
                let base = addr_path.child(&a.name);
                let mut a = Fields::new(a.children);
                let addr_type = match a.text("AddrType", &base)? {
                    Some(t) => t
                        .parse::<AddrType>()
                        .map_err(|r| invalid(join(&base, "AddrType"), r))?,
                    None => AddrType::Uri,
                };
                let mut ports = Vec::new();
                if let Some(pl) = a.take("Port") {
                    for p in pl.children {
                        let port_path = base.child("Port");
                        let pbase = port_path.child(&p.name);
                        let nbr = Fields::new(p.children).required("PortNbr", &pbase)?;
                        ports.push(
                            nbr.parse::<u16>()
                                .map_err(|e| invalid(join(&pbase, "PortNbr"), e.to_string()))?,
                        );
                    }
                }
                addresses.push(AppAddr {
                    addr: a.required("Addr", &base)?,
                    addr_type,
                    ports,
                });
            }
        }
        let mut auths = Vec::new();
        let auth_path = here.child("AppAuth");
        if let Some(list) = fields.take("AppAuth") {
            for a in list.children {
                let base = auth_path.child(&a.name);
                let mut a = Fields::new(a.children);
                auths.push(AppAuth {
                    level: a
                        .required("AAuthLevel", &base)?
                        .parse()
                        .map_err(|r| invalid(join(&base, "AAuthLevel"), r))?,
                    auth_type: a
                        .required("AAuthType", &base)?
                        .parse()
                        .map_err(|r| invalid(join(&base, "AAuthType"), r))?,
                    name: a.text("AAuthName", &base)?,
                    secret: a.text("AAuthSecret", &base)?,
                    data: a.text("AAuthData", &base)?,
                });
            }
        }
        let name = fields.text("Name", &here)?;
        let pref_con_ref = fields.text("PrefConRef", &here)?;
        let auth_pref = fields.text("AAuthPref", &here)?;
        Ok(DmAcc {
            node_name,
            server_id,
            name,
            pref_con_ref,
            addresses,
            auth_pref,
            auths,
        })
    }

    /// A ready-made account for `server_id` reachable at `url`, with Basic client and
    /// server credentials; convenient for tests and demos.
    pub fn simple(server_id: &str, url: &str, client_secret: &str, server_secret: &str) -> Self {
        let node_name = server_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        DmAcc {
            node_name,
            server_id: server_id.to_string(),
            name: Some(server_id.to_string()),
            pref_con_ref: None,
            addresses: vec![AppAddr {
                addr: url.to_string(),
                addr_type: AddrType::Uri,
                ports: Vec::new(),
            }],
            auth_pref: None,
            auths: vec![
                AppAuth {
                    level: AuthLevel::ClCred,
                    auth_type: AuthType::Basic,
                    name: Some("device".into()),
                    secret: Some(client_secret.to_string()),
                    data: None,
                },
                AppAuth {
                    level: AuthLevel::SrvCred,
                    auth_type: AuthType::Basic,
                    name: Some(server_id.to_string()),
                    secret: Some(server_secret.to_string()),
                    data: None,
                },
            ],
        }
    }
}

/// Properties of the DMAcc root when a bare interior node is needed.
pub fn dmacc_root_props() -> RtProperties {
    RtProperties {
        node_type: NodeType::DdfName(DMACC_MO_ID.into()),
        ..RtProperties::interior()
    }
}

/// The children of an account node, taken by name (the first of a name wins, as
/// [`Node::child`] finds it).
struct Fields(Vec<Option<Node>>);

impl Fields {
    fn new(children: Vec<Node>) -> Self {
        Fields(children.into_iter().map(Some).collect())
    }

    fn take(&mut self, name: &str) -> Option<Node> {
        self.0
            .iter_mut()
            .find(|c| c.as_ref().is_some_and(|c| c.name == name))
            .and_then(Option::take)
    }

    /// The value of leaf `name`, if present.
    fn text<P: std::fmt::Display + ?Sized>(
        &mut self,
        name: &str,
        base: &P,
    ) -> Result<Option<String>, DecodeError> {
        match self.take(name) {
            None => Ok(None),
            Some(c) => c
                .value
                .map(Some)
                .ok_or_else(|| invalid(join(base, name), "must be a leaf with a value")),
        }
    }

    fn required<P: std::fmt::Display + ?Sized>(
        &mut self,
        name: &str,
        base: &P,
    ) -> Result<String, DecodeError> {
        self.text(name, base)?
            .ok_or_else(|| DecodeError::MissingField {
                field: join(base, name),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_tnds() {
        let mut acc = DmAcc::simple("dms2.example", "https://dms2.example/dm", "c", "s");
        acc.addresses[0].ports = vec![443];
        let node = acc.to_node();
        assert_eq!(DmAcc::from_node(&node).unwrap(), acc);
    }

    #[test]
    fn rejects_bad_values_naming_the_field() {
        let mut node = DmAcc::simple("S", "https://x/dm", "c", "s").to_node();
        node.child_mut("AppID").unwrap().value = Some("w8".into());
        match DmAcc::from_node(&node) {
            Err(DecodeError::InvalidField { field, .. }) => assert_eq!(field, "DMAcc/S/AppID"),
            other => panic!("{other:?}"),
        }
        let mut acc = DmAcc::simple("S", "https://x/dm", "c", "s");
        acc.addresses[0].addr_type = AddrType::Ipv4;
        assert!(acc.validate().is_err());
        let mut node = acc.to_node();
        node.descendant_mut(&["AppAuth", "1", "AAuthLevel"])
            .unwrap()
            .value = Some("NOPE".into());
        assert!(matches!(
            DmAcc::from_node(&node),
            Err(DecodeError::InvalidField { .. })
        ));
    }
}
