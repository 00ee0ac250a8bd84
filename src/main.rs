use mimalloc::MiMalloc;

// hnsw_rs allocates per point and per query; mimalloc cuts build time, memory and query time.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    feedrank::cli::main()
}
