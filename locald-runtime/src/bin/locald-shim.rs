//! `locald-shim`: the container shim as a stand-alone executable, for the odd program
//! that cannot serve as its own (`LOCALD_SHIM=/path/to/locald-shim`). It is never run
//! by hand: the runtime starts it as `locald-shim __locald-shim ...`, which the
//! constructor linked in from `locald_runtime` handles before `main`.

fn main() {
    locald_runtime::run_if_requested();
    std::process::exit(2);
}
