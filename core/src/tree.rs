//! The DM Tree model and its TNDS serialization (`application/vnd.syncml.dmtnds+xml`).
//!
//! `MgmtTree = (VerDTD, Man?, Mod?, Node+)`,
//! `Node = (NodeName, Path?, RTProperties?, (Node* | Value?))`,
//! `RTProperties = (ACL?, Format?, Name?, Size?, Title?, TStamp?, Type, VerNo?)`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::acl::Acl;
use crate::error::DecodeError;
use crate::xml::{self, join, Element, Path, XmlLimits, XmlWriter};

/// The TNDS namespace.
pub const TNDS_NAMESPACE: &str = "syncml:dmddf1.2";
/// The TNDS media type.
pub const TNDS_MEDIA_TYPE: &str = "application/vnd.syncml.dmtnds+xml";

/// A node's data format (`RTProperties/Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Format {
    B64,
    Bin,
    Bool,
    Chr,
    Int,
    Node,
    Null,
    Xml,
    Date,
    Time,
    Float,
}

impl Format {
    /// All formats.
    pub const ALL: [Format; 11] = [
        Format::B64,
        Format::Bin,
        Format::Bool,
        Format::Chr,
        Format::Int,
        Format::Node,
        Format::Null,
        Format::Xml,
        Format::Date,
        Format::Time,
        Format::Float,
    ];

    /// The element name used in TNDS (`<Format><chr/></Format>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::B64 => "b64",
            Format::Bin => "bin",
            Format::Bool => "bool",
            Format::Chr => "chr",
            Format::Int => "int",
            Format::Node => "node",
            Format::Null => "null",
            Format::Xml => "xml",
            Format::Date => "date",
            Format::Time => "time",
            Format::Float => "float",
        }
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown format `{s}`"))
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `RTProperties/Type`: interior nodes carry a DDF name, leaves a MIME type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeType {
    /// `<MIME>` (leaf nodes).
    Mime(String),
    /// `<DDFName>` (interior nodes; may be empty).
    DdfName(String),
}

/// Run-time properties of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtProperties {
    /// The node's own ACL; `None` (or empty) inherits.
    pub acl: Option<Acl>,
    /// Data format.
    pub format: Option<Format>,
    /// Display name.
    pub name: Option<String>,
    /// Value size in bytes.
    pub size: Option<u64>,
    /// Human-readable title.
    pub title: Option<String>,
    /// Last-modified timestamp, as sent.
    pub tstamp: Option<String>,
    /// MIME type or DDF name.
    pub node_type: NodeType,
    /// Version number, as sent.
    pub ver_no: Option<String>,
}

impl RtProperties {
    /// Properties of an interior node with an empty DDF name.
    pub fn interior() -> Self {
        Self::with_type(Format::Node, NodeType::DdfName(String::new()))
    }

    /// Properties of a `chr` leaf of type `text/plain`.
    pub fn text_leaf() -> Self {
        Self::with_type(Format::Chr, NodeType::Mime("text/plain".into()))
    }

    fn with_type(format: Format, node_type: NodeType) -> Self {
        Self {
            acl: None,
            format: Some(format),
            name: None,
            size: None,
            title: None,
            tstamp: None,
            node_type,
            ver_no: None,
        }
    }
}

/// A DM Tree node with its subtree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The node's name (one URI segment).
    pub name: String,
    /// `Path`: the URI of the node's parent, only on top-level nodes of a TNDS object.
    pub path: Option<String>,
    /// Run-time properties.
    pub props: Option<RtProperties>,
    /// Child nodes (interior nodes).
    pub children: Vec<Node>,
    /// The value (leaf nodes).
    pub value: Option<String>,
}

impl Node {
    /// An interior node with children.
    pub fn interior(name: impl Into<String>, children: Vec<Node>) -> Self {
        Self {
            name: name.into(),
            path: None,
            props: Some(RtProperties::interior()),
            children,
            value: None,
        }
    }

    /// A `chr` leaf with a value.
    pub fn leaf(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            path: None,
            props: Some(RtProperties::text_leaf()),
            children: Vec::new(),
            value: Some(value.into()),
        }
    }

    /// Sets the node's ACL (builder style).
    pub fn with_acl(mut self, acl: Acl) -> Self {
        self.set_acl(acl);
        self
    }

    /// The node's own ACL, empty when it inherits.
    pub fn acl(&self) -> Acl {
        self.own_acl().clone()
    }

    /// The node's own ACL, borrowed; empty when it inherits.
    pub fn own_acl(&self) -> &Acl {
        self.props
            .as_ref()
            .and_then(|p| p.acl.as_ref())
            .unwrap_or(&crate::acl::EMPTY_ACL)
    }

    /// Sets (or clears, with an empty ACL) the node's own ACL.
    pub fn set_acl(&mut self, acl: Acl) {
        let props = self.props.get_or_insert_with(|| {
            if self.value.is_some() {
                RtProperties::text_leaf()
            } else {
                RtProperties::interior()
            }
        });
        props.acl = if acl.is_empty() { None } else { Some(acl) };
    }

    /// True when the node is interior (has children, or is declared `node`).
    pub fn is_interior(&self) -> bool {
        !self.children.is_empty()
            || self.value.is_none()
                && self
                    .props
                    .as_ref()
                    .is_none_or(|p| p.format == Some(Format::Node) || p.format.is_none())
    }

    /// The direct child called `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The direct child called `name`, mutably.
    pub fn child_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.children.iter_mut().find(|c| c.name == name)
    }

    /// The descendant at the relative `segments` (empty: this node).
    pub fn descendant(&self, segments: &[&str]) -> Option<&Node> {
        segments.iter().try_fold(self, |n, s| n.child(s))
    }

    /// The descendant at the relative `segments`, mutably.
    pub fn descendant_mut(&mut self, segments: &[&str]) -> Option<&mut Node> {
        let mut node = self;
        for s in segments {
            node = node.child_mut(s)?;
        }
        Some(node)
    }

    /// Visits this node and every descendant with its URI, depth first, parents first.
    pub fn walk<'a>(&'a self, uri: &str, visit: &mut impl FnMut(&str, &'a Node)) {
        let mut buf = String::with_capacity(uri.len() + 64);
        buf.push_str(uri);
        self.walk_in(&mut buf, visit);
    }

    // One URI buffer for the whole walk: each child appends its segment, then truncates.
    fn walk_in<'a>(&'a self, uri: &mut String, visit: &mut impl FnMut(&str, &'a Node)) {
        visit(uri, self);
        for c in &self.children {
            let len = uri.len();
            push_child(uri, &c.name);
            c.walk_in(uri, visit);
            uri.truncate(len);
        }
    }
}

/// A TNDS object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MgmtTree {
    /// `VerDTD`, normally `1.2`.
    pub ver_dtd: String,
    /// Manufacturer.
    pub man: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Top-level nodes.
    pub nodes: Vec<Node>,
}

impl MgmtTree {
    /// A TNDS object holding `nodes`.
    pub fn new(nodes: Vec<Node>) -> Self {
        Self {
            ver_dtd: "1.2".into(),
            man: None,
            model: None,
            nodes,
        }
    }

    /// Encodes as a standalone TNDS document.
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::new();
        w.declaration();
        write_mgmt_tree(&mut w, self);
        w.finish()
    }

    /// Decodes a standalone TNDS document under the default limits.
    pub fn from_xml(input: &[u8]) -> Result<Self, DecodeError> {
        Self::from_xml_with_limits(input, &XmlLimits::default())
    }

    /// Decodes a TNDS document that must hold exactly one top-level node (a subtree, an
    /// account): what hosts hand back in replies.
    pub fn single_node_from_xml(input: &[u8]) -> Result<Node, DecodeError> {
        let mut nodes = Self::from_xml(input)?.nodes.into_iter();
        match (nodes.next(), nodes.next()) {
            (Some(node), None) => Ok(node),
            _ => Err(DecodeError::InvalidField {
                field: "MgmtTree".into(),
                reason: "must hold exactly one top-level node".into(),
            }),
        }
    }

    /// Decodes a standalone TNDS document under `limits`.
    pub fn from_xml_with_limits(input: &[u8], limits: &XmlLimits) -> Result<Self, DecodeError> {
        let doc = xml::parse(input, limits)?;
        mgmt_tree_from_element(&doc.root(), &Path::Text(""))
    }
}

/// Joins a parent URI and a child name.
pub fn child_uri(parent: &str, name: &str) -> String {
    let mut uri = String::with_capacity(parent.len() + 1 + name.len());
    uri.push_str(parent);
    push_child(&mut uri, name);
    uri
}

/// Appends the segment `name` to the URI in `uri` (`/` unless `uri` is empty).
fn push_child(uri: &mut String, name: &str) {
    if !uri.is_empty() {
        uri.push('/');
    }
    uri.push_str(name);
}

/// Splits an absolute DM Tree URI (`.` or `./A/B`) into its segments, validating it.
pub fn uri_segments(uri: &str) -> Result<Vec<&str>, String> {
    if uri == "." {
        return Ok(Vec::new());
    }
    let rest = uri
        .strip_prefix("./")
        .ok_or_else(|| format!("URI `{uri}` must be `.` or start with `./`"))?;
    let segments: Vec<&str> = rest.split('/').collect();
    for s in &segments {
        if s.is_empty() || *s == "." || *s == ".." {
            return Err(format!("URI `{uri}` has an empty, `.` or `..` segment"));
        }
        if s.contains(['?', '#', '*']) || s.chars().any(char::is_control) {
            return Err(format!("URI `{uri}` has a reserved character in `{s}`"));
        }
    }
    Ok(segments)
}

/// The parent URI of a non-root URI.
pub fn parent_uri(uri: &str) -> Option<&str> {
    uri.rfind('/').map(|i| &uri[..i])
}

/// True when `uri` is `ancestor` or lies below it.
pub fn uri_within(uri: &str, ancestor: &str) -> bool {
    ancestor == "."
        || uri == ancestor
        || (uri.len() > ancestor.len()
            && uri.starts_with(ancestor)
            && uri.as_bytes()[ancestor.len()] == b'/')
}

pub(crate) fn write_mgmt_tree(w: &mut XmlWriter, tree: &MgmtTree) {
    w.open_attrs("MgmtTree", &[("xmlns", TNDS_NAMESPACE)]);
    w.leaf("VerDTD", &tree.ver_dtd);
    if let Some(m) = &tree.man {
        w.leaf("Man", m);
    }
    if let Some(m) = &tree.model {
        w.leaf("Mod", m);
    }
    for n in &tree.nodes {
        write_node(w, n);
    }
    w.close();
}

fn write_node(w: &mut XmlWriter, node: &Node) {
    w.open("Node");
    w.leaf("NodeName", &node.name);
    if let Some(p) = &node.path {
        w.leaf("Path", p);
    }
    if let Some(props) = &node.props {
        w.open("RTProperties");
        if let Some(acl) = &props.acl {
            w.leaf("ACL", &acl.to_string());
        }
        if let Some(f) = props.format {
            w.open("Format");
            w.empty(f.as_str());
            w.close();
        }
        if let Some(v) = &props.name {
            w.leaf("Name", v);
        }
        if let Some(v) = props.size {
            w.leaf("Size", &v.to_string());
        }
        if let Some(v) = &props.title {
            w.leaf("Title", v);
        }
        if let Some(v) = &props.tstamp {
            w.leaf("TStamp", v);
        }
        w.open("Type");
        match &props.node_type {
            NodeType::Mime(m) => w.leaf("MIME", m),
            NodeType::DdfName(d) => w.leaf("DDFName", d),
        }
        w.close();
        if let Some(v) = &props.ver_no {
            w.leaf("VerNo", v);
        }
        w.close();
    }
    for c in &node.children {
        write_node(w, c);
    }
    if let Some(v) = &node.value {
        w.leaf("Value", v);
    }
    w.close();
}

pub(crate) fn mgmt_tree_from_element(el: &Element, path: &Path) -> Result<MgmtTree, DecodeError> {
    let here = path.child("MgmtTree");
    if el.name() != "MgmtTree" {
        return Err(DecodeError::WrongRoot {
            expected: "MgmtTree".into(),
            found: el.name().to_string(),
        });
    }
    if el.ns() != Some(TNDS_NAMESPACE) {
        return Err(DecodeError::WrongNamespace {
            expected: TNDS_NAMESPACE.into(),
            found: el.ns().unwrap_or_default().to_string(),
        });
    }
    let [ver_dtd, man, model, first_node] = el.fields(["VerDTD", "Man", "Mod", "Node"], &here)?;
    let ver_dtd = ver_dtd.required_text(&here)?.to_string();
    if ver_dtd != "1.2" {
        return Err(DecodeError::InvalidField {
            field: join(&here, "VerDTD"),
            reason: format!("`{ver_dtd}` is not 1.2"),
        });
    }
    first_node.required(&here)?;
    let nodes = el
        .children_named("Node")
        .enumerate()
        .map(|(i, n)| node_from_element(&n, &here.nth("Node", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(MgmtTree {
        ver_dtd,
        man: man.text().map(str::to_string),
        model: model.text().map(str::to_string),
        nodes,
    })
}

fn node_from_element(el: &Element, here: &Path) -> Result<Node, DecodeError> {
    // The child nodes are listed by `children_named` below; their slot is not read.
    let [name, path, props, _, value] =
        el.fields(["NodeName", "Path", "RTProperties", "Node", "Value"], here)?;
    let name = name.required_text(here)?.to_string();
    if name.is_empty() || name.contains(['/', '?']) {
        return Err(DecodeError::InvalidField {
            field: join(here, "NodeName"),
            reason: format!("`{name}` is not a node name"),
        });
    }
    let path = match path.text() {
        Some(p) => {
            uri_segments(p).map_err(|reason| DecodeError::InvalidField {
                field: join(here, "Path"),
                reason,
            })?;
            Some(p.to_string())
        }
        None => None,
    };
    let props = props
        .element()
        .map(|p| props_from_element(&p, &here.child("RTProperties")))
        .transpose()?;
    let children = el
        .children_named("Node")
        .enumerate()
        .map(|(i, n)| node_from_element(&n, &here.nth("Node", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    // Leaf values keep their exact text; only surrounding layout is dropped elsewhere.
    let value = value.element().map(|v| v.text().to_string());
    if value.is_some() && !children.is_empty() {
        return Err(DecodeError::InvalidField {
            field: here.to_string(),
            reason: "a node has either child nodes or a value, not both".into(),
        });
    }
    Ok(Node {
        name,
        path,
        props,
        children,
        value,
    })
}

fn props_from_element(el: &Element, here: &Path) -> Result<RtProperties, DecodeError> {
    let [acl, format, name, size, title, tstamp, node_type, ver_no] = el.fields(
        [
            "ACL", "Format", "Name", "Size", "Title", "TStamp", "Type", "VerNo",
        ],
        here,
    )?;
    let acl = match acl.text() {
        Some(t) => {
            let acl = Acl::parse(t).map_err(|e| match e {
                DecodeError::InvalidField { reason, .. } => DecodeError::InvalidField {
                    field: join(here, "ACL"),
                    reason,
                },
                other => other,
            })?;
            (!acl.is_empty()).then_some(acl)
        }
        None => None,
    };
    let format = match format.element() {
        Some(f) => {
            let field = || join(here, "Format");
            let Some(only) = f.only_child() else {
                return Err(DecodeError::InvalidField {
                    field: field(),
                    reason: "must hold exactly one format element".into(),
                });
            };
            Some(
                only.name()
                    .parse::<Format>()
                    .map_err(|reason| DecodeError::InvalidField {
                        field: field(),
                        reason,
                    })?,
            )
        }
        None => None,
    };
    let size = match size.text() {
        Some(s) => Some(s.parse::<u64>().map_err(|e| DecodeError::InvalidField {
            field: join(here, "Size"),
            reason: e.to_string(),
        })?),
        None => None,
    };
    let type_el = node_type.required(here)?;
    let type_path = here.child("Type");
    let [mime, ddf_name] = type_el.fields(["MIME", "DDFName"], &type_path)?;
    let node_type = match (mime.element(), ddf_name.element()) {
        (Some(m), None) => NodeType::Mime(m.text().trim().to_string()),
        (None, Some(d)) => NodeType::DdfName(d.text().trim().to_string()),
        _ => {
            return Err(DecodeError::InvalidField {
                field: type_path.to_string(),
                reason: "must hold exactly one of MIME or DDFName".into(),
            })
        }
    };
    Ok(RtProperties {
        acl,
        format,
        name: name.text().map(str::to_string),
        size,
        title: title.text().map(str::to_string),
        tstamp: tstamp.text().map(str::to_string),
        node_type,
        ver_no: ver_no.text().map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_tree() {
        let tree = MgmtTree::new(vec![Node {
            path: Some("./DMAcc".into()),
            ..Node::interior(
                "X",
                vec![
                    Node::leaf("AppID", "w7"),
                    Node::leaf("Weird", "a<b&c \"q\""),
                ],
            )
            .with_acl(Acl::parse("Get=*&Replace=S1").unwrap())
        }]);
        let xml = tree.to_xml();
        assert_eq!(MgmtTree::from_xml(xml.as_bytes()).unwrap(), tree);
    }

    #[test]
    fn names_the_bad_field() {
        let xml = r#"<MgmtTree xmlns="syncml:dmddf1.2"><VerDTD>1.2</VerDTD><Node><NodeName>A</NodeName><RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type><Size>x</Size></RTProperties><Value>v</Value></Node></MgmtTree>"#;
        match MgmtTree::from_xml(xml.as_bytes()) {
            Err(DecodeError::InvalidField { field, .. }) => {
                assert_eq!(field, "MgmtTree/Node[1]/RTProperties/Size")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn uri_helpers() {
        assert_eq!(uri_segments("./A/B").unwrap(), vec!["A", "B"]);
        assert!(uri_segments("A/B").is_err());
        assert!(uri_segments("./A//B").is_err());
        assert!(uri_segments("./A/../B").is_err());
        assert!(uri_within("./A/B", "./A"));
        assert!(!uri_within("./AB", "./A"));
        assert!(uri_within("./AB", "."));
        assert_eq!(parent_uri("./A/B"), Some("./A"));
    }
}
