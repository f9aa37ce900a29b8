//! A small, hardened XML reader and writer shared by every codec in the crate.
//!
//! The protocol documents are small and untrusted, so decoding first builds a tiny element
//! tree under hard limits (size, depth, element count) and refuses DOCTYPE declarations and
//! every entity other than the five predefined ones and character references. The typed
//! codecs then map that tree to structs, naming the field in every error.

use std::borrow::Cow;
use std::fmt::Display;

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::error::DecodeError;

/// Limits applied while decoding untrusted XML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlLimits {
    /// Largest accepted document, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted element nesting (the root is depth 1).
    pub max_depth: usize,
    /// Most elements accepted in one document.
    pub max_elements: usize,
}

impl Default for XmlLimits {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024,
            max_depth: 32,
            max_elements: 20_000,
        }
    }
}

/// A decoded document: every element in document order in one vector (a parent before
/// its descendants, each entry knowing where its subtree ends), so decoding allocates a
/// few vectors per document rather than a few per element. Names and text borrow from
/// the input where they can.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Document<'a> {
    entries: Vec<Entry<'a>>,
    attrs: Vec<(&'a str, Cow<'a, str>)>,
    /// The namespaces in use; an entry's `ns` is an index into this, plus one.
    namespaces: Vec<Cow<'a, str>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry<'a> {
    name: &'a str,
    /// 0: no namespace; otherwise `namespaces[ns - 1]`.
    ns: u32,
    /// One past the last entry of this element's subtree.
    end: u32,
    attrs: (u32, u32),
    has_children: bool,
    /// The character data. For an element with children only its blankness is kept
    /// (white space between children is not accumulated).
    text: Cow<'a, str>,
}

impl<'a> Document<'a> {
    /// The root element.
    pub fn root(&self) -> Element<'_> {
        Element { doc: self, idx: 0 }
    }
}

/// One element of a [`Document`]: namespace, local name, attributes, child elements and
/// text. A cheap copyable handle.
#[derive(Clone, Copy)]
pub(crate) struct Element<'d> {
    doc: &'d Document<'d>,
    idx: u32,
}

impl std::fmt::Debug for Element<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Element")
            .field("ns", &self.ns())
            .field("name", &self.name())
            .field("children", &self.children().collect::<Vec<_>>())
            .field("text", &self.text())
            .finish()
    }
}

/// The child elements of an element, in order.
pub(crate) struct Children<'d> {
    doc: &'d Document<'d>,
    next: u32,
    end: u32,
}

impl<'d> Iterator for Children<'d> {
    type Item = Element<'d>;
    fn next(&mut self) -> Option<Element<'d>> {
        if self.next >= self.end {
            return None;
        }
        let idx = self.next;
        self.next = self.doc.entries[idx as usize].end;
        Some(Element { doc: self.doc, idx })
    }
}

impl<'d> Element<'d> {
    fn entry(&self) -> &'d Entry<'d> {
        &self.doc.entries[self.idx as usize]
    }

    /// The local name.
    pub fn name(&self) -> &'d str {
        self.entry().name
    }

    /// The namespace URI, if the element is in one.
    pub fn ns(&self) -> Option<&'d str> {
        match self.entry().ns {
            0 => None,
            n => Some(self.doc.namespaces[n as usize - 1].as_ref()),
        }
    }

    /// Whether this element is in the same namespace (or none) as `other`, an element
    /// of the same document.
    pub fn in_namespace_of(&self, other: &Element<'_>) -> bool {
        debug_assert!(
            std::ptr::eq(self.doc, other.doc),
            "elements of two documents"
        );
        self.entry().ns == other.entry().ns
    }

    /// The character data (for an element with children: empty or blank).
    pub fn text(&self) -> &'d str {
        self.entry().text.as_ref()
    }

    /// The attributes other than namespace declarations, as written.
    pub fn attrs(&self) -> impl Iterator<Item = (&'d str, &'d str)> + 'd {
        let (from, to) = self.entry().attrs;
        self.doc.attrs[from as usize..to as usize]
            .iter()
            .map(|(k, v)| (*k, v.as_ref()))
    }

    pub fn attr(&self, name: &str) -> Option<&'d str> {
        self.attrs().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    pub fn children(&self) -> Children<'d> {
        Children {
            doc: self.doc,
            next: self.idx + 1,
            end: self.entry().end,
        }
    }

    pub fn has_children(&self) -> bool {
        self.entry().has_children
    }

    pub fn first_child(&self) -> Option<Element<'d>> {
        self.children().next()
    }

    /// The only child element, when there is exactly one.
    pub fn only_child(&self) -> Option<Element<'d>> {
        let mut children = self.children();
        match (children.next(), children.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }

    pub fn child_count(&self) -> usize {
        self.children().count()
    }

    pub fn child(&self, name: &str) -> Option<Element<'d>> {
        self.children().find(|c| c.name() == name)
    }

    pub fn children_named<'s>(&self, name: &'s str) -> impl Iterator<Item = Element<'d>> + 's
    where
        'd: 's,
    {
        self.children().filter(move |c| c.name() == name)
    }

    pub fn required_child<P: Display + ?Sized>(
        &self,
        name: &str,
        path: &P,
    ) -> Result<Element<'d>, DecodeError> {
        self.child(name).ok_or_else(|| DecodeError::MissingField {
            field: join(path, name),
        })
    }

    /// Sorts the child elements by name in one pass: the first child named `names[i]` is
    /// in slot `i`. Refuses a child whose name is not in `names`, a second child of a
    /// name that may not repeat, and text mixed with child elements.
    pub fn fields<const N: usize, P: Display + ?Sized>(
        &self,
        names: [&'static str; N],
        path: &P,
    ) -> Result<[Field<'d>; N], DecodeError> {
        let mut slots = names.map(|name| Field { name, el: None });
        for c in self.children() {
            let name = c.name();
            let Some(slot) = slots.iter_mut().find(|s| s.name == name) else {
                return Err(DecodeError::UnexpectedElement {
                    parent: path.to_string(),
                    element: name.to_string(),
                });
            };
            match slot.el {
                None => slot.el = Some(c),
                // Only list elements repeat; a second scalar would be silently ignored otherwise.
                Some(_) if REPEATABLE.contains(&name) => {}
                Some(_) => {
                    return Err(DecodeError::InvalidField {
                        field: join(path, name),
                        reason: "appears more than once".into(),
                    })
                }
            }
        }
        if self.has_children() && !is_xml_blank(self.text()) {
            return Err(DecodeError::InvalidField {
                field: path.to_string(),
                reason: "text mixed with child elements".into(),
            });
        }
        Ok(slots)
    }

    /// Refuses every child element, and text mixed with them.
    pub fn no_children<P: Display + ?Sized>(&self, path: &P) -> Result<(), DecodeError> {
        self.fields([], path).map(|[]| ())
    }
}

/// The first child element of one name, as sorted by [`Element::fields`].
#[derive(Clone, Copy)]
pub(crate) struct Field<'d> {
    name: &'static str,
    el: Option<Element<'d>>,
}

impl<'d> Field<'d> {
    /// The element, if present.
    pub fn element(&self) -> Option<Element<'d>> {
        self.el
    }

    /// The element's text, trimmed, if present.
    pub fn text(&self) -> Option<&'d str> {
        self.el.map(|c| c.text().trim())
    }

    /// The element, or a missing-field error naming `path/name`.
    pub fn required<P: Display + ?Sized>(&self, path: &P) -> Result<Element<'d>, DecodeError> {
        self.el.ok_or_else(|| DecodeError::MissingField {
            field: join(path, self.name),
        })
    }

    /// The element's text, trimmed, or a missing-field error naming `path/name`.
    pub fn required_text<P: Display + ?Sized>(&self, path: &P) -> Result<&'d str, DecodeError> {
        self.required(path).map(|c| c.text().trim())
    }
}

/// Where an element lies, for error messages: built only when an error names it, so
/// decoding a valid document formats no paths.
#[derive(Clone, Copy)]
pub(crate) enum Path<'p> {
    /// A path given as text.
    Text(&'p str),
    /// `parent/name`.
    Child(&'p Path<'p>, &'p str),
    /// `parent/name[index]` (from 1).
    Nth(&'p Path<'p>, &'p str, usize),
}

impl<'p> Path<'p> {
    pub fn child(&'p self, name: &'p str) -> Path<'p> {
        Path::Child(self, name)
    }

    pub fn nth(&'p self, name: &'p str, index: usize) -> Path<'p> {
        Path::Nth(self, name, index)
    }
}

impl Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (parent, name) = match self {
            Path::Text(t) => return f.write_str(t),
            Path::Child(p, n) | Path::Nth(p, n, _) => (p, n),
        };
        if !matches!(parent, Path::Text("")) {
            write!(f, "{parent}/")?;
        }
        f.write_str(name)?;
        if let Path::Nth(_, _, i) = self {
            write!(f, "[{i}]")?;
        }
        Ok(())
    }
}

/// The only elements that may repeat in the documents this crate reads.
const REPEATABLE: &[&str] = &["Node", "Subtree"];

/// True when `text` holds only XML white space (space, tab, CR, LF).
pub(crate) fn is_xml_blank(text: &str) -> bool {
    text.bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// True for characters XML 1.0 can carry (`Char` production).
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && !matches!(c, '\u{FFFE}' | '\u{FFFF}'))
}

/// Checks that `text` can be written as XML character data. A byte scan: in UTF-8 the only
/// characters XML 1.0 refuses are the C0 controls other than tab, LF and CR (single
/// bytes) and U+FFFE / U+FFFF (`EF BF BE`, `EF BF BF`).
pub(crate) fn check_xml_text(text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    // Fast path, vectorised: no control byte and no byte that could start U+FFFE/U+FFFF.
    if bytes.iter().all(|&b| b >= 0x20 && b != 0xEF) {
        return Ok(());
    }
    let bad = bytes.iter().enumerate().position(|(i, &b)| {
        let control = b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r');
        let nonchar = b == 0xEF
            && bytes.get(i + 1) == Some(&0xBF)
            && matches!(bytes.get(i + 2), Some(0xBE | 0xBF));
        control || nonchar
    });
    match bad {
        Some(i) => {
            let c = text[i..].chars().next().unwrap_or('\u{0}');
            Err(format!(
                "character U+{:04X} cannot be carried in XML",
                u32::from(c)
            ))
        }
        None => Ok(()),
    }
}

/// `parent/child`, or `child` at the top.
pub(crate) fn join<P: Display + ?Sized>(path: &P, name: &str) -> String {
    use std::fmt::Write;
    // One allocation: the path is formatted straight into the result.
    let mut out = String::new();
    let _ = write!(out, "{path}");
    if !out.is_empty() {
        out.push('/');
    }
    out.push_str(name);
    out
}

fn malformed(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Malformed {
        reason: e.to_string(),
    }
}

/// `part` as a slice of `input` when it lies inside it (what quick-xml hands out when it
/// reads from a `&str`), so the document can borrow it; a copy otherwise.
fn reborrow<'i>(input: &'i str, part: &str) -> Cow<'i, str> {
    let start = (part.as_ptr() as usize).wrapping_sub(input.as_ptr() as usize);
    match input.get(start..start.wrapping_add(part.len())) {
        Some(s) if s.as_ptr() == part.as_ptr() => Cow::Borrowed(s),
        _ => Cow::Owned(part.to_string()),
    }
}

/// A name as a slice of `input` (names always lie inside the document).
fn name_in<'i>(input: &'i str, part: &str) -> Result<&'i str, DecodeError> {
    match reborrow(input, part) {
        Cow::Borrowed(n) => Ok(n),
        Cow::Owned(_) => Err(malformed("name outside the document")),
    }
}

/// Character data with XML end-of-line handling (CR LF and lone CR become LF).
fn text_content<'i>(input: &'i str, raw: &str) -> Cow<'i, str> {
    let text = reborrow(input, raw);
    if text.as_bytes().contains(&b'\r') {
        Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        text
    }
}

/// The XML namespace, bound to the `xml` prefix without a declaration.
const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";

/// Namespace declarations in scope while reading: prefix (`""` for the default namespace)
/// and index into the document's namespaces (0: none, as `xmlns=""` declares).
struct Scopes<'i> {
    bindings: Vec<(&'i str, u32)>,
}

impl<'i> Scopes<'i> {
    fn resolve(&self, prefix: &str) -> Option<u32> {
        self.bindings
            .iter()
            .rev()
            // Most lookups are for the default namespace: no byte comparison for those.
            .find(|(p, _)| p.len() == prefix.len() && (prefix.is_empty() || *p == prefix))
            .map(|(_, ns)| *ns)
    }
}

fn intern<'i>(namespaces: &mut Vec<Cow<'i, str>>, uri: Cow<'i, str>) -> u32 {
    match namespaces.iter().position(|n| *n == uri) {
        Some(i) => i as u32 + 1,
        None => {
            namespaces.push(uri);
            namespaces.len() as u32
        }
    }
}

/// An attribute value with entities resolved and white space normalised, refusing
/// entities other than the predefined ones and characters XML cannot carry.
fn attr_value<'i>(
    input: &'i str,
    attr: &quick_xml::events::attributes::Attribute<'_>,
) -> Result<Cow<'i, str>, DecodeError> {
    let value = attr
        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
        .map_err(|e| match e {
            quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(
                _,
                name,
            )) => DecodeError::Entity { name },
            other => malformed(other),
        })?;
    check_xml_text(&value).map_err(|reason| DecodeError::Malformed { reason })?;
    Ok(match value {
        Cow::Borrowed(v) => reborrow(input, v),
        Cow::Owned(v) => Cow::Owned(v),
    })
}

/// Parses `input` into a document, enforcing `limits`.
pub(crate) fn parse<'i>(input: &'i [u8], limits: &XmlLimits) -> Result<Document<'i>, DecodeError> {
    if input.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            size: input.len(),
            limit: limits.max_bytes,
        });
    }
    let text: &'i str = std::str::from_utf8(input).map_err(|e| DecodeError::Malformed {
        reason: format!("not UTF-8: {e}"),
    })?;
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;

    let mut doc = Document {
        // Compact documents (as the encoder writes them, no layout) hold about one element
        // per 20 bytes: one per 16 leaves room, so the vector is not grown and copied.
        entries: Vec::with_capacity(input.len() / 16 + 4),
        attrs: Vec::new(),
        namespaces: Vec::new(),
    };
    let mut scopes = Scopes {
        bindings: Vec::new(),
    };
    // Open elements: entry index and how many bindings were in scope before it.
    // Deep enough for every document of the protocol without growing.
    let mut open: Vec<(u32, usize)> = Vec::with_capacity(16);
    let mut done = false;
    loop {
        let event = reader.read_event().map_err(malformed)?;
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let is_empty = matches!(event, Event::Empty(_));
                if doc.entries.len() >= limits.max_elements {
                    return Err(DecodeError::Malformed {
                        reason: format!("more than {} elements", limits.max_elements),
                    });
                }
                if open.len() + 1 > limits.max_depth {
                    return Err(DecodeError::TooDeep {
                        limit: limits.max_depth,
                    });
                }
                if done {
                    return Err(malformed("content after the root element"));
                }
                let scope_len = scopes.bindings.len();
                let attrs_from = doc.attrs.len() as u32;
                for attr in start.attributes() {
                    let attr = attr.map_err(malformed)?;
                    let key = name_in(text, attr.key.into_inner())?;
                    if key == "xmlns" {
                        let uri = attr_value(text, &attr)?;
                        let ns = if uri.is_empty() {
                            0
                        } else {
                            intern(&mut doc.namespaces, uri)
                        };
                        scopes.bindings.push(("", ns));
                    } else if let Some(prefix) = key.strip_prefix("xmlns:") {
                        let uri = attr_value(text, &attr)?;
                        if uri.is_empty() {
                            return Err(malformed(format!(
                                "namespace prefix `{prefix}` bound to no namespace"
                            )));
                        }
                        scopes
                            .bindings
                            .push((prefix, intern(&mut doc.namespaces, uri)));
                    } else {
                        let value = attr_value(text, &attr)?;
                        doc.attrs.push((key, value));
                    }
                }
                let qname = name_in(text, start.name().into_inner())?;
                let (prefix, name) = qname.split_once(':').unwrap_or(("", qname));
                let ns = match scopes.resolve(prefix) {
                    Some(ns) => ns,
                    None if prefix.is_empty() => 0,
                    None if prefix == "xml" => {
                        intern(&mut doc.namespaces, Cow::Borrowed(XML_NAMESPACE))
                    }
                    None => {
                        return Err(DecodeError::Malformed {
                            reason: format!("unknown namespace prefix `{prefix}`"),
                        })
                    }
                };
                let idx = doc.entries.len() as u32;
                if let Some(&(parent, _)) = open.last() {
                    let parent = &mut doc.entries[parent as usize];
                    // Between children only blankness matters: drop blank text kept so far.
                    if !parent.has_children && is_xml_blank(&parent.text) {
                        parent.text = Cow::Borrowed("");
                    }
                    parent.has_children = true;
                }
                doc.entries.push(Entry {
                    name,
                    ns,
                    end: idx + 1,
                    attrs: (attrs_from, doc.attrs.len() as u32),
                    has_children: false,
                    text: Cow::Borrowed(""),
                });
                if is_empty {
                    scopes.bindings.truncate(scope_len);
                    done = open.is_empty();
                } else {
                    open.push((idx, scope_len));
                }
            }
            Event::End(_) => {
                let (idx, scope_len) = open.pop().ok_or_else(|| malformed("unbalanced end tag"))?;
                scopes.bindings.truncate(scope_len);
                doc.entries[idx as usize].end = doc.entries.len() as u32;
                done = open.is_empty();
            }
            Event::Text(t) => {
                push_text(&mut doc, &open, text_content(text, &t))?;
            }
            Event::CData(c) => {
                push_text(&mut doc, &open, reborrow(text, &c))?;
            }
            Event::GeneralRef(r) => {
                let resolved: Cow<'i, str> = if r.is_char_ref() {
                    match r.resolve_char_ref().map_err(malformed)? {
                        Some(c) => Cow::Owned(c.to_string()),
                        None => return Err(malformed("bad character reference")),
                    }
                } else {
                    let name = r.xml10_content();
                    match name.as_ref() {
                        "amp" => Cow::Borrowed("&"),
                        "lt" => Cow::Borrowed("<"),
                        "gt" => Cow::Borrowed(">"),
                        "quot" => Cow::Borrowed("\""),
                        "apos" => Cow::Borrowed("'"),
                        other => {
                            return Err(DecodeError::Entity {
                                name: other.to_string(),
                            })
                        }
                    }
                };
                push_text(&mut doc, &open, resolved)?;
            }
            Event::DocType(_) => return Err(DecodeError::Doctype),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !open.is_empty() {
        return Err(malformed("document ended inside an element"));
    }
    if doc.entries.is_empty() {
        return Err(malformed("no root element"));
    }
    Ok(doc)
}

fn push_text<'i>(
    doc: &mut Document<'i>,
    open: &[(u32, usize)],
    content: Cow<'i, str>,
) -> Result<(), DecodeError> {
    let blank = is_xml_blank(&content);
    if !blank {
        check_xml_text(&content).map_err(|reason| DecodeError::Malformed { reason })?;
    }
    match open.last() {
        Some(&(idx, _)) => {
            let el = &mut doc.entries[idx as usize];
            if el.has_children && blank {
                // White space between children: nothing to keep.
            } else if el.text.is_empty() {
                el.text = content;
            } else {
                el.text.to_mut().push_str(&content);
            }
            Ok(())
        }
        None if content.trim().is_empty() => Ok(()),
        None => Err(malformed("text outside the root element")),
    }
}

/// Appends `text` to `out`, escaped for element content and attribute values. Runs
/// without a character to escape (most text) are copied whole.
pub(crate) fn escape_into(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(i) = rest
        .bytes()
        .position(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'' | b'\r'))
    {
        out.push_str(&rest[..i]);
        out.push_str(match rest.as_bytes()[i] {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&apos;",
            // A raw CR would come back as LF (XML end-of-line handling).
            _ => "&#13;",
        });
        // The escaped characters are ASCII: `i + 1` is a character boundary.
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

/// A minimal streaming writer producing compact, deterministic XML.
#[derive(Debug, Default)]
pub(crate) struct XmlWriter {
    pub out: String,
    stack: Vec<&'static str>,
}

impl XmlWriter {
    pub fn new() -> Self {
        Self::with_capacity(1024)
    }

    /// A writer whose output starts with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            out: String::with_capacity(bytes),
            stack: Vec::with_capacity(8),
        }
    }

    pub fn declaration(&mut self) {
        self.out
            .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    }

    /// Opens `<name a="v" ...>`.
    pub fn open_attrs(&mut self, name: &'static str, attrs: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_into(&mut self.out, v);
            self.out.push('"');
        }
        self.out.push('>');
        self.stack.push(name);
    }

    pub fn open(&mut self, name: &'static str) {
        self.open_attrs(name, &[]);
    }

    pub fn close(&mut self) {
        let name = self.stack.pop().expect("close without open");
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    /// `<name/>`.
    pub fn empty(&mut self, name: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push_str("/>");
    }

    /// Character data, escaped.
    pub fn text(&mut self, text: &str) {
        escape_into(&mut self.out, text);
    }

    /// `<name>text</name>`.
    pub fn leaf(&mut self, name: &str, text: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        escape_into(&mut self.out, text);
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    pub fn finish(self) -> String {
        debug_assert!(self.stack.is_empty(), "unclosed elements: {:?}", self.stack);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_each_special_character_and_copies_the_rest() {
        let mut out = String::new();
        escape_into(&mut out, "é&ü<x>\"q\'\r\n✓");
        assert_eq!(out, "é&amp;ü&lt;x&gt;&quot;q&apos;&#13;\n✓");
        out.clear();
        escape_into(&mut out, "plain text, nothing to escape");
        assert_eq!(out, "plain text, nothing to escape");
        out.clear();
        escape_into(&mut out, "");
        assert_eq!(out, "");
    }

    #[test]
    fn refuses_doctype_and_foreign_entities() {
        let l = XmlLimits::default();
        assert_eq!(
            parse(b"<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>", &l),
            Err(DecodeError::Doctype)
        );
        assert_eq!(
            parse(b"<a>&x;</a>", &l),
            Err(DecodeError::Entity { name: "x".into() })
        );
        let ok = parse(b"<a>&amp;&#65;&lt;</a>", &l).unwrap();
        assert_eq!(ok.root().text(), "&A<");
    }

    #[test]
    fn refuses_characters_xml_cannot_carry_and_keeps_carriage_returns() {
        let l = XmlLimits::default();
        assert!(matches!(
            parse(b"<a>&#1;</a>", &l),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"<a>\x07</a>", &l),
            Err(DecodeError::Malformed { .. })
        ));
        let mut out = String::from("<a>");
        escape_into(&mut out, "x\r\ny");
        out.push_str("</a>");
        assert_eq!(parse(out.as_bytes(), &l).unwrap().root().text(), "x\r\ny");
    }

    #[test]
    fn enforces_depth_and_size() {
        let l = XmlLimits {
            max_bytes: 64,
            max_depth: 3,
            max_elements: 100,
        };
        assert_eq!(
            parse(b"<a><b><c><d/></c></b></a>", &l),
            Err(DecodeError::TooDeep { limit: 3 })
        );
        let big = vec![b' '; 65];
        assert_eq!(
            parse(&big, &l),
            Err(DecodeError::TooLarge {
                size: 65,
                limit: 64
            })
        );
    }

    #[test]
    fn resolves_namespaces_and_rejects_mismatched_tags() {
        let l = XmlLimits::default();
        let e = parse(br#"<p:a xmlns:p="urn:x"><p:b>t</p:b></p:a>"#, &l).unwrap();
        assert_eq!(e.root().ns(), Some("urn:x"));
        assert_eq!(e.root().first_child().unwrap().text(), "t");
        assert_eq!(e.root().first_child().unwrap().ns(), Some("urn:x"));
        assert!(matches!(
            parse(br#"<q:a xmlns:p="urn:x"/>"#, &l),
            Err(DecodeError::Malformed { .. })
        ));
        let d = parse(br#"<a xmlns="urn:x"><b xmlns=""><c/></b><d/></a>"#, &l).unwrap();
        let names: Vec<_> = d.root().children().map(|c| (c.name(), c.ns())).collect();
        assert_eq!(names, [("b", None), ("d", Some("urn:x"))]);
        assert_eq!(
            d.root().first_child().unwrap().first_child().unwrap().ns(),
            None
        );
        assert!(matches!(
            parse(b"<a><b></a>", &l),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
