//! TNDS documents (DM Tree subtrees, DMAcc): decoding never panics, and what decodes
//! re-encodes to a document that decodes to the same tree.
#![no_main]

use dmdelegate::MgmtTree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = MgmtTree::from_xml(data) {
        let again = MgmtTree::from_xml(tree.to_xml().as_bytes()).expect("an encoded tree decodes");
        assert_eq!(again, tree, "the round trip changed the tree");
        for node in &tree.nodes {
            let _ = dmdelegate::DmAcc::from_node(node);
        }
    }
});
