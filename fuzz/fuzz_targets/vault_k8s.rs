//! libFuzzer entry point for [`sidekey_fuzz::vault_k8s`].
#![no_main]

#[global_allocator]
static ALLOC: sidekey_fuzz::alloc::Bounded = sidekey_fuzz::alloc::Bounded::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| sidekey_fuzz::vault_k8s(data));
