//! The `vdisk` binary; everything lives in the library so that it is tested
//! and documented there.

fn main() -> std::process::ExitCode {
    vdisk::main()
}
