//! The DNS forwarder on hostile messages: arbitrary bytes as a device's
//! query and as an upstream's answer, through the functions every datagram
//! meets (`tollgate::dns::answer`, over hickory-proto).
//!
//! It must never panic. A query it accepts has exactly one question, and
//! the refusal it would send parses back as a response with the query's id
//! and question. From an answer it learns only addresses of the question's
//! family (A for A, AAAA for AAAA), at most one per answer record, each
//! with a TTL no longer than the longest in the answer.

#![no_main]

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::RecordType,
};
use libfuzzer_sys::fuzz_target;
use tollgate::dns::answer::{MAX_MESSAGE, addresses, answers, parse_query, refusal};

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_MESSAGE {
        return;
    }
    if let Ok(query) = parse_query(data) {
        assert_eq!(query.message.queries().len(), 1);
        let reply = Message::from_vec(&refusal(&query.message, ResponseCode::Refused))
            .expect("the refusal parses");
        assert_eq!(reply.message_type(), MessageType::Response);
        assert_eq!(reply.id(), query.message.id());
        assert_eq!(reply.queries(), query.message.queries());
        assert_eq!(reply.response_code(), ResponseCode::Refused);
        assert!(answers(&query.message, reply.id(), &reply));
    }
    let Ok(answer) = Message::from_vec(data) else {
        return;
    };
    let learned = addresses(&answer);
    assert!(learned.len() <= answer.answers().len());
    let longest = answer.answers().iter().map(|r| r.ttl()).max().unwrap_or(0);
    let kind = answer.queries().first().map(|q| q.query_type());
    for (addr, ttl) in learned {
        assert!(ttl <= longest, "a TTL longer than any record's");
        match kind {
            Some(RecordType::A) => assert!(addr.is_ipv4(), "{addr} for an A question"),
            Some(RecordType::AAAA) => assert!(addr.is_ipv6(), "{addr} for an AAAA question"),
            _ => {}
        }
    }
});
