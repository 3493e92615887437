//! What a user reads when a request body cannot be replayed by the default policy: the
//! compiler's messages, checked against `tests/compile_fail/*.stderr`.
//!
//! `TRYBUILD=overwrite cargo test --test compile_fail` rewrites them after a deliberate change.

#[test]
fn a_body_the_default_policy_cannot_replay_is_a_compile_error_that_names_buffer_body() {
    trybuild::TestCases::new().compile_fail("tests/compile_fail/*.rs");
}
