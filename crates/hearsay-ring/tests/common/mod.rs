//! Generators shared by the integration tests.
#![allow(dead_code)] // each test binary uses a subset

use hearsay_ring::{Member, ReplicationStrategy};
use hearsay_types::{NodeId, Token};
use proptest::prelude::*;

pub fn arb_token() -> impl Strategy<Value = Token> {
    // Small values make different nodes collide on a token; full-range ones spread out.
    prop_oneof![(-30i64..30).prop_map(Token), any::<i64>().prop_map(Token)]
}

pub fn arb_members() -> impl Strategy<Value = Vec<Member>> {
    prop::collection::btree_map(
        0u128..40,
        (
            0usize..3,
            0usize..4,
            prop::collection::vec(arb_token(), 0..6),
        ),
        1..14,
    )
    .prop_map(|map| {
        map.into_iter()
            .map(|(id, (dc, rack, tokens))| {
                Member::new(
                    NodeId(id),
                    &format!("dc{dc}"),
                    &format!("rack{rack}"),
                    tokens,
                )
            })
            .collect()
    })
}

pub fn arb_strategy() -> impl Strategy<Value = ReplicationStrategy> {
    prop_oneof![
        (1usize..6).prop_map(ReplicationStrategy::simple),
        prop::collection::btree_map(
            prop_oneof![Just("dc0"), Just("dc1"), Just("dc2"), Just("dc9")],
            0usize..5,
            1..4
        )
        .prop_map(|m| ReplicationStrategy::network_topology(m.into_iter())),
    ]
}
