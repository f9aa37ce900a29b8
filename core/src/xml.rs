//! A small, hardened XML reader and writer shared by every codec in the crate.
//!
//! The protocol documents are small and untrusted, so decoding first builds a tiny element
//! tree under hard limits (size, depth, element count) and refuses DOCTYPE declarations and
//! every entity other than the five predefined ones and character references. The typed
//! codecs then map that tree to structs, naming the field in every error.

use std::borrow::Cow;

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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Element {
    pub ns: Option<String>,
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
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

    pub fn required_child(&self, name: &str, path: &str) -> Result<&Element, DecodeError> {
        self.child(name).ok_or_else(|| DecodeError::MissingField {
            field: join(path, name),
        })
    }

    /// Refuses any child element whose name is not in `allowed`.
    pub fn only_children(&self, allowed: &[&str], path: &str) -> Result<(), DecodeError> {
        for (i, c) in self.children.iter().enumerate() {
            if !allowed.contains(&c.name.as_str()) {
                return Err(DecodeError::UnexpectedElement {
                    parent: path.to_string(),
                    element: c.name.clone(),
                });
            }
            // Only list elements repeat; a second scalar would be silently ignored otherwise.
            if !REPEATABLE.contains(&c.name.as_str())
                && self.children[..i].iter().any(|p| p.name == c.name)
            {
                return Err(DecodeError::InvalidField {
                    field: join(path, &c.name),
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

/// Checks that `text` can be written as XML character data.
pub(crate) fn check_xml_text(text: &str) -> Result<(), String> {
    match text.chars().find(|c| !is_xml_char(*c)) {
        Some(c) => Err(format!(
            "character U+{:04X} cannot be carried in XML",
            u32::from(c)
        )),
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

/// Parses `input` into an element tree, enforcing `limits`.
pub(crate) fn parse(input: &[u8], limits: &XmlLimits) -> Result<Element, DecodeError> {
    if input.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            size: input.len(),
            limit: limits.max_bytes,
        });
    }
    let text = std::str::from_utf8(input).map_err(|e| DecodeError::Malformed {
        reason: format!("not UTF-8: {e}"),
    })?;
    let mut reader = NsReader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;

    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let (resolved, event) = reader.read_resolved_event().map_err(malformed)?;
        let ns = match resolved {
            ResolveResult::Bound(ns) => Some(ns.as_ref().to_string()),
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
                let local = start.local_name();
                let name = local.as_ref().to_string();
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
                    text: String::new(),
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
                let content = t.xml10_content();
                push_text(&mut stack, &content)?;
            }
            Event::CData(c) => {
                let content: &str = c.as_ref();
                push_text(&mut stack, content)?;
            }
            Event::GeneralRef(r) => {
                let resolved: Cow<'_, str> = if r.is_char_ref() {
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
                push_text(&mut stack, &resolved)?;
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

fn attach(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

fn push_text(stack: &mut [Element], content: &str) -> Result<(), DecodeError> {
    check_xml_text(content).map_err(|reason| DecodeError::Malformed { reason })?;
    match stack.last_mut() {
        Some(el) => {
            el.text.push_str(content);
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
