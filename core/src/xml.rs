//! A small, hardened XML reader and writer shared by every codec in the crate.
//!
//! The protocol documents are small and untrusted, so decoding first builds a tiny element
//! tree under hard limits (size, depth, element count) and refuses DOCTYPE declarations and
//! every entity other than the five predefined ones and character references. The typed
//! codecs then map that tree to structs, naming the field in every error.

use std::borrow::Cow;
use std::sync::Arc;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

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

/// One decoded element: namespace, local name, attributes, child elements and text.
/// Names and text borrow from the document where they can (decoding allocates little);
/// the namespace is shared by every element that has it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Element<'a> {
    pub ns: Option<Arc<str>>,
    pub name: &'a str,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element<'a>>,
    /// The character data. For an element with children only its blankness is kept
    /// (white space between children is not accumulated).
    pub text: Cow<'a, str>,
}

impl<'a> Element<'a> {
    pub fn child(&self, name: &str) -> Option<&Element<'a>> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children_named<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = &'s Element<'a>> + 's {
        self.children.iter().filter(move |c| c.name == name)
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The text of a required child element, trimmed.
    pub fn required_text(&self, name: &str, path: &str) -> Result<&str, DecodeError> {
        match self.child(name) {
            Some(c) => Ok(c.text.trim()),
            None => Err(DecodeError::MissingField {
                field: join(path, name),
            }),
        }
    }

    /// The text of an optional child element, trimmed.
    pub fn optional_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    pub fn required_child(&self, name: &str, path: &str) -> Result<&Element<'a>, DecodeError> {
        self.child(name).ok_or_else(|| DecodeError::MissingField {
            field: join(path, name),
        })
    }

    /// Refuses any child element whose name is not in `allowed`.
    pub fn only_children(&self, allowed: &[&str], path: &str) -> Result<(), DecodeError> {
        for (i, c) in self.children.iter().enumerate() {
            if !allowed.contains(&c.name) {
                return Err(DecodeError::UnexpectedElement {
                    parent: path.to_string(),
                    element: c.name.to_string(),
                });
            }
            // Only list elements repeat; a second scalar would be silently ignored otherwise.
            if !REPEATABLE.contains(&c.name) && self.children[..i].iter().any(|p| p.name == c.name)
            {
                return Err(DecodeError::InvalidField {
                    field: join(path, c.name),
                    reason: "appears more than once".into(),
                });
            }
        }
        if !self.children.is_empty() && !is_xml_blank(&self.text) {
            return Err(DecodeError::InvalidField {
                field: path.to_string(),
                reason: "text mixed with child elements".into(),
            });
        }
        Ok(())
    }
}

/// The only elements that may repeat in the documents this crate reads.
const REPEATABLE: &[&str] = &["Node", "Subtree"];

/// True when `text` holds only XML white space (space, tab, CR, LF).
pub(crate) fn is_xml_blank(text: &str) -> bool {
    text.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
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
pub(crate) fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}/{name}")
    }
}

fn malformed(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Malformed {
        reason: e.to_string(),
    }
}

/// `part` as a slice of `input` when it lies inside it (what quick-xml hands out when it
/// reads from a `&str`), so the element tree can borrow it; a copy otherwise.
fn reborrow<'i>(input: &'i str, part: &str) -> Cow<'i, str> {
    let start = (part.as_ptr() as usize).wrapping_sub(input.as_ptr() as usize);
    match input.get(start..start.wrapping_add(part.len())) {
        Some(s) if s.as_ptr() == part.as_ptr() => Cow::Borrowed(s),
        _ => Cow::Owned(part.to_string()),
    }
}

/// Character data with XML end-of-line handling (CR LF and lone CR become LF).
fn text_content<'i>(input: &'i str, raw: &str) -> Cow<'i, str> {
    let text = reborrow(input, raw);
    if text.contains('\r') {
        Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        text
    }
}

/// Parses `input` into an element tree, enforcing `limits`.
pub(crate) fn parse<'i>(input: &'i [u8], limits: &XmlLimits) -> Result<Element<'i>, DecodeError> {
    if input.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            size: input.len(),
            limit: limits.max_bytes,
        });
    }
    let text: &'i str = std::str::from_utf8(input).map_err(|e| DecodeError::Malformed {
        reason: format!("not UTF-8: {e}"),
    })?;
    let mut reader = NsReader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;

    let mut stack: Vec<Element<'i>> = Vec::new();
    let mut root: Option<Element<'i>> = None;
    let mut count = 0usize;
    // Documents use one or two namespaces: each element shares the last one seen.
    let mut last_ns: Option<Arc<str>> = None;
    loop {
        let (resolved, event) = reader.read_resolved_event().map_err(malformed)?;
        let ns = match resolved {
            ResolveResult::Bound(ns) => {
                let uri = ns.as_ref();
                match &last_ns {
                    Some(last) if **last == *uri => Some(last.clone()),
                    _ => {
                        let shared: Arc<str> = Arc::from(uri);
                        last_ns = Some(shared.clone());
                        Some(shared)
                    }
                }
            }
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(prefix) => {
                return Err(DecodeError::Malformed {
                    reason: format!("unknown namespace prefix `{prefix}`"),
                })
            }
        };
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let is_empty = matches!(event, Event::Empty(_));
                count += 1;
                if count > limits.max_elements {
                    return Err(DecodeError::Malformed {
                        reason: format!("more than {} elements", limits.max_elements),
                    });
                }
                if stack.len() + 1 > limits.max_depth {
                    return Err(DecodeError::TooDeep {
                        limit: limits.max_depth,
                    });
                }
                if root.is_some() {
                    return Err(malformed("content after the root element"));
                }
                let name = match reborrow(text, start.local_name().into_inner()) {
                    Cow::Borrowed(n) => n,
                    // Names always lie inside the document; never reached.
                    Cow::Owned(_) => return Err(malformed("element name outside the document")),
                };
                let mut attrs = Vec::new();
                for attr in start.attributes() {
                    let attr = attr.map_err(malformed)?;
                    let key: &str = attr.key.as_ref();
                    if key == "xmlns" || key.starts_with("xmlns:") {
                        continue;
                    }
                    let value = attr
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| match e {
                            quick_xml::Error::Escape(
                                quick_xml::escape::EscapeError::UnrecognizedEntity(_, name),
                            ) => DecodeError::Entity { name },
                            other => malformed(other),
                        })?;
                    check_xml_text(&value).map_err(|reason| DecodeError::Malformed { reason })?;
                    attrs.push((key.to_string(), value.into_owned()));
                }
                let element = Element {
                    ns,
                    name,
                    attrs,
                    children: Vec::new(),
                    text: Cow::Borrowed(""),
                };
                if is_empty {
                    attach(&mut stack, &mut root, element);
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let element = stack.pop().ok_or_else(|| malformed("unbalanced end tag"))?;
                attach(&mut stack, &mut root, element);
            }
            Event::Text(t) => {
                push_text(&mut stack, text_content(text, &t))?;
            }
            Event::CData(c) => {
                push_text(&mut stack, reborrow(text, &c))?;
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
                push_text(&mut stack, resolved)?;
            }
            Event::DocType(_) => return Err(DecodeError::Doctype),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(malformed("document ended inside an element"));
    }
    root.ok_or_else(|| malformed("no root element"))
}

fn attach<'i>(stack: &mut [Element<'i>], root: &mut Option<Element<'i>>, element: Element<'i>) {
    match stack.last_mut() {
        Some(parent) => {
            // Between children only blankness matters: drop blank text kept so far.
            if parent.children.is_empty() && is_xml_blank(&parent.text) {
                parent.text = Cow::Borrowed("");
            }
            parent.children.push(element)
        }
        None => *root = Some(element),
    }
}

fn push_text<'i>(stack: &mut [Element<'i>], content: Cow<'i, str>) -> Result<(), DecodeError> {
    check_xml_text(&content).map_err(|reason| DecodeError::Malformed { reason })?;
    match stack.last_mut() {
        Some(el) => {
            if !el.children.is_empty() && is_xml_blank(&content) {
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

/// Appends `text` to `out`, escaped for element content and attribute values.
pub(crate) fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // A raw CR would come back as LF (XML end-of-line handling).
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

/// A minimal streaming writer producing compact, deterministic XML.
#[derive(Debug, Default)]
pub(crate) struct XmlWriter {
    pub out: String,
    stack: Vec<&'static str>,
}

impl XmlWriter {
    pub fn new() -> Self {
        Self {
            out: String::with_capacity(1024),
            stack: Vec::new(),
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
        assert_eq!(ok.text, "&A<");
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
        assert_eq!(parse(out.as_bytes(), &l).unwrap().text, "x\r\ny");
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
        assert_eq!(e.ns.as_deref(), Some("urn:x"));
        assert_eq!(e.children[0].text, "t");
        assert!(matches!(
            parse(b"<a><b></a>", &l),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
