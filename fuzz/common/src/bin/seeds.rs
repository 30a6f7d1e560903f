//! Write the seed corpora: `seeds DIR` makes `DIR/<target>/` for every target that takes raw
//! bytes, filled with valid encodings made by the library's own encoders.

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "build/fuzz/seeds".into());
    match mtmux_fuzz::seeds::write_all(std::path::Path::new(&dir)) {
        Ok(n) => println!("seeds: {n} files under {dir}"),
        Err(e) => {
            eprintln!("seeds: {e}");
            std::process::exit(1);
        }
    }
}
