//! End-to-end tests live in `tests/`; the binaries in `src/bin` are the
//! agent, the injector, the `sidekey` CLI and the example app, built here so the tests can
//! start them as processes.
