//! Compiles `hodei/agent/v1/agent.proto` with a vendored `protoc`, so a fresh
//! machine needs nothing beyond cargo.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // AssignJob carries secret values and Register the agent's secret:
        // their Debug is written by hand in lib.rs so that a stray `{:?}`
        // can never print them.
        .skip_debug(["hodei.agent.v1.AssignJob", "hodei.agent.v1.Register"])
        // The rpc is named `Connect`, as the protocol says; the generated
        // `AgentServiceClient::connect(dst)` constructor would clash with it,
        // so clients are built with `AgentServiceClient::new(channel)`.
        .build_transport(false)
        .compile_with_config(config, &["hodei/agent/v1/agent.proto"], &["."])?;
    println!("cargo:rerun-if-changed=hodei/agent/v1/agent.proto");
    Ok(())
}
