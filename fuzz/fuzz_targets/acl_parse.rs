//! ACL strings (`Get=a+b&Replace=*`): parsing never panics, and a parsed ACL prints to a
//! string that parses to the same ACL.
#![no_main]

use dmdelegate::Acl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(acl) = Acl::parse(text) {
            let again = Acl::parse(&acl.to_string()).expect("a printed ACL parses");
            assert_eq!(again, acl, "the round trip changed the ACL");
        }
    }
});
