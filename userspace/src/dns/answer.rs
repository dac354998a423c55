//! The DNS messages the forwarder reads and writes, through hickory-proto:
//! the question of a query, the refusals, and the addresses an upstream's
//! answer gives for the question's name. Pure: no IO.

use std::net::IpAddr;

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{Name, RData, RecordType},
};

/// The largest DNS message over UDP the forwarder reads or writes (EDNS's
/// common ceiling; larger answers come truncated and devices retry).
pub const MAX_MESSAGE: usize = 4096;

/// A query the forwarder handles: one question of class IN.
#[derive(Debug)]
pub struct Query {
    pub message: Message,
    /// The question's name in the form FQDN patterns compare
    /// ([`crate::fqdn::normalise`]); `None` when it is no host name (it
    /// then matches no rule).
    pub name: Option<String>,
}

/// Why a datagram is not a query the forwarder handles.
#[derive(Debug, PartialEq, Eq)]
pub enum NotAQuery {
    /// Not DNS at all, or a response: dropped without an answer.
    Malformed,
    /// A DNS message that is no single standard query: answered with this
    /// code (FORMERR, NOTIMP).
    Unsupported(u16, ResponseCode),
}

/// Parses a datagram from a device.
pub fn parse_query(datagram: &[u8]) -> Result<Query, NotAQuery> {
    let message = Message::from_vec(datagram).map_err(|_| NotAQuery::Malformed)?;
    if message.message_type() != MessageType::Query {
        return Err(NotAQuery::Malformed);
    }
    if message.op_code() != OpCode::Query {
        return Err(NotAQuery::Unsupported(message.id(), ResponseCode::NotImp));
    }
    let [question] = message.queries() else {
        return Err(NotAQuery::Unsupported(message.id(), ResponseCode::FormErr));
    };
    let name = crate::fqdn::normalise(&question.name().to_ascii()).ok();
    Ok(Query { message, name })
}

/// An answer with no records: `code` to the device's `query`.
pub fn refusal(query: &Message, code: ResponseCode) -> Vec<u8> {
    let mut answer = Message::error_msg(query.id(), query.op_code(), code);
    answer.add_queries(query.queries().iter().cloned());
    answer.set_recursion_desired(query.recursion_desired());
    answer.set_recursion_available(true);
    answer.to_vec().unwrap_or_default()
}

/// An answer with no question (to a message without a usable one).
pub fn bare_error(id: u16, code: ResponseCode) -> Vec<u8> {
    Message::error_msg(id, OpCode::Query, code)
        .to_vec()
        .unwrap_or_default()
}

/// Whether `answer` from an upstream answers `query` (sent with `id`): a
/// response with that id and the same question.
pub fn answers(query: &Message, id: u16, answer: &Message) -> bool {
    answer.message_type() == MessageType::Response
        && answer.id() == id
        && answer.queries() == query.queries()
}

/// The A and AAAA addresses `answer` gives for its question's name,
/// following CNAMEs from that name (at most `MAX_CHAIN` of them), each with
/// the smallest TTL on its way (a CNAME that expires first ends it).
pub fn addresses(answer: &Message) -> Vec<(IpAddr, u32)> {
    const MAX_CHAIN: usize = 16;
    let Some(question) = answer.queries().first() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    // The names on the chain, each with the smallest TTL to reach it.
    let mut chain: Vec<(Name, u32)> = vec![(question.name().to_lowercase(), u32::MAX)];
    let mut i = 0;
    while i < chain.len() && chain.len() <= MAX_CHAIN {
        let (name, reach) = chain[i].clone();
        for record in answer.answers() {
            if record.name().to_lowercase() != name {
                continue;
            }
            let ttl = record.ttl().min(reach);
            match record.data() {
                RData::A(a) => found.push((IpAddr::V4(a.0), ttl)),
                RData::AAAA(a) => found.push((IpAddr::V6(a.0), ttl)),
                RData::CNAME(target) => {
                    let target = target.0.to_lowercase();
                    if !chain.iter().any(|(n, _)| *n == target) {
                        chain.push((target, ttl));
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    found.retain(|(addr, _)| match question.query_type() {
        RecordType::A => addr.is_ipv4(),
        RecordType::AAAA => addr.is_ipv6(),
        _ => true,
    });
    found
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::{
        op::Query as Question,
        rr::{Record, rdata},
    };

    use super::*;

    fn query(name: &str, kind: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(7)
            .set_message_type(MessageType::Query)
            .add_query(Question::query(Name::from_str(name).unwrap(), kind));
        m
    }

    fn response(name: &str, records: Vec<Record>) -> Message {
        let mut m = query(name, RecordType::A);
        m.set_message_type(MessageType::Response);
        m.add_answers(records);
        m
    }

    fn a(name: &str, ttl: u32, addr: &str) -> Record {
        Record::from_rdata(
            Name::from_str(name).unwrap(),
            ttl,
            RData::A(rdata::A(addr.parse().unwrap())),
        )
    }

    fn cname(name: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(
            Name::from_str(name).unwrap(),
            ttl,
            RData::CNAME(rdata::CNAME(Name::from_str(target).unwrap())),
        )
    }

    #[test]
    fn a_query_parses_with_its_normalised_name() {
        let bytes = query("IoT.Example.COM.", RecordType::A).to_vec().unwrap();
        let q = parse_query(&bytes).unwrap();
        assert_eq!(q.name.as_deref(), Some("iot.example.com"));
        assert_eq!(
            parse_query(b"\x00\x01garbage").unwrap_err(),
            NotAQuery::Malformed
        );
        let mut two = query("a.example.com.", RecordType::A);
        two.add_query(Question::query(
            Name::from_str("b.example.com.").unwrap(),
            RecordType::A,
        ));
        assert_eq!(
            parse_query(&two.to_vec().unwrap()).unwrap_err(),
            NotAQuery::Unsupported(7, ResponseCode::FormErr)
        );
    }

    #[test]
    fn cnames_are_followed_from_the_question_and_ttls_take_the_minimum() {
        let m = response(
            "iot.example.com.",
            vec![
                cname("iot.example.com.", 30, "edge.cdn.test."),
                a("edge.cdn.test.", 300, "192.0.2.10"),
                // Not on the chain: an injected extra record is ignored.
                a("bank.example.net.", 300, "198.51.100.1"),
            ],
        );
        assert_eq!(addresses(&m), vec![("192.0.2.10".parse().unwrap(), 30)]);
    }

    #[test]
    fn a_cname_loop_ends() {
        let m = response(
            "a.example.com.",
            vec![
                cname("a.example.com.", 5, "b.example.com."),
                cname("b.example.com.", 5, "a.example.com."),
            ],
        );
        assert!(addresses(&m).is_empty());
    }

    #[test]
    fn refusals_keep_the_id_and_question() {
        let q = query("x.example.com.", RecordType::A);
        let r = Message::from_vec(&refusal(&q, ResponseCode::Refused)).unwrap();
        assert_eq!(r.id(), 7);
        assert_eq!(r.response_code(), ResponseCode::Refused);
        assert_eq!(r.queries(), q.queries());
        assert!(r.answers().is_empty());
    }
}
