//! Properties of the DNS parser: what a message is built from comes back,
//! any prefix is that message or nothing, and any bytes (pointer loops,
//! truncations, garbage) give a bounded message or nothing.

use std::net::{IpAddr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::proptesting::config;

/// A record of the answer section: (type, rdata).
fn record() -> impl Strategy<Value = (u16, Vec<u8>)> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| (1, a.to_vec())),
        any::<[u8; 16]>().prop_map(|a| (28, a.to_vec())),
        (any::<u16>(), prop::collection::vec(any::<u8>(), 0..40)),
    ]
}

fn labels() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[a-zA-Z0-9-]{1,63}", 1..4).prop_filter("fits in 255 octets", |l| {
        l.iter().map(|x| x.len() + 1).sum::<usize>() < 255
    })
}

/// The wire form of a message: header, one question, answers named by a
/// pointer to the question (`compress`) or spelt out.
fn build(id: u16, flags: u16, name: &[String], qtype: u16, answers: &[(u16, Vec<u8>)], compress: bool) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend(id.to_be_bytes());
    m.extend(flags.to_be_bytes());
    m.extend(1u16.to_be_bytes());
    m.extend((answers.len() as u16).to_be_bytes());
    m.extend([0, 0, 0, 0]);
    let spell = |m: &mut Vec<u8>| {
        for l in name {
            m.push(l.len() as u8);
            m.extend(l.as_bytes());
        }
        m.push(0);
    };
    spell(&mut m);
    m.extend(qtype.to_be_bytes());
    m.extend(1u16.to_be_bytes());
    for (rtype, rdata) in answers {
        if compress {
            m.extend([0xc0, 12]);
        } else {
            spell(&mut m);
        }
        m.extend(rtype.to_be_bytes());
        m.extend([0, 1, 0, 0, 0, 60]);
        m.extend((rdata.len() as u16).to_be_bytes());
        m.extend(rdata);
    }
    m
}

fn expected_answers(answers: &[(u16, Vec<u8>)]) -> Vec<IpAddr> {
    answers
        .iter()
        .filter_map(|(t, d)| match (t, d.len()) {
            (1, 4) => Some(IpAddr::from([d[0], d[1], d[2], d[3]])),
            (28, 16) => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&d[..]).ok()?))),
            _ => None,
        })
        .collect()
}

/// Messages made of DNS-shaped pieces at random: labels, pointers anywhere
/// (loops included), roots, stray bytes.
fn shaped() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        "[a-z]{0,63}".prop_map(|l| {
            let mut v = vec![l.len() as u8];
            v.extend(l.as_bytes());
            v
        }),
        (0u16..0x3fff).prop_map(|p| vec![0xc0 | (p >> 8) as u8, p as u8]),
        (0u16..64).prop_map(|p| vec![0xc0, p as u8]),
        Just(vec![0]),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    (any::<[u8; 12]>(), prop::collection::vec(piece, 0..40)).prop_map(|(h, pieces)| {
        let mut m = h.to_vec();
        m.extend(pieces.concat());
        m
    })
}

/// What holds of any parsed message: a name within DNS's limit, at most 64 answers.
fn bounded(d: &DnsMessage) -> Result<(), TestCaseError> {
    // Each label byte is at most 3 bytes once decoded (U+FFFD), plus the dots.
    prop_assert!(d.name.len() <= 3 * NAME_MAX_OCTETS, "name of {} bytes", d.name.len());
    prop_assert!(d.answers.len() <= 64);
    Ok(())
}

proptest! {
    #![proptest_config(config(2048))]

    /// A message built from its fields parses back to them.
    #[test]
    fn a_built_message_parses_back(
        id in any::<u16>(),
        flags in any::<u16>(),
        name in labels(),
        qtype in any::<u16>(),
        answers in prop::collection::vec(record(), 0..6),
        compress in any::<bool>(),
    ) {
        let m = build(id, flags, &name, qtype, &answers, compress);
        let d = parse(&m).ok_or_else(|| TestCaseError::fail("not parsed"))?;
        prop_assert_eq!(d, DnsMessage {
            id,
            response: flags & 0x8000 != 0,
            name: name.join("."),
            qtype,
            answers: expected_answers(&answers),
        });
        // Cut anywhere, it is that message or nothing: never other addresses.
        for n in 0..m.len() {
            if let Some(cut) = parse(&m[..n]) {
                prop_assert_eq!(&cut.name, &name.join("."));
                prop_assert!(answers.is_empty(), "a cut answer section parsed: {cut:?}");
            }
        }
    }

    /// Any bytes: a bounded message, or none; never a panic or a hang.
    #[test]
    fn any_bytes_are_a_bounded_message_or_none(m in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        shaped(),
    ]) {
        if let Some(d) = parse(&m) {
            bounded(&d)?;
        }
    }
}
