//! `locald-shim`: the container shim as a stand-alone executable, for programs that
//! embed the locald SDK without calling `locald_runtime::run_if_requested()` in `main`.
//! It is never run by hand: the runtime starts it as `locald-shim __locald-shim ...`.

fn main() {
    locald_runtime::run_if_requested();
    std::process::exit(2);
}
