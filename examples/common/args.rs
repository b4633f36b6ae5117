//! The value after `--name` on the command line, shared by the small examples.

/// The value after `name` among the program's arguments, parsed; `default` when the flag
/// is absent or its value does not parse.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
