//! Compiles proto/ with protox, so building Herald needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../../proto";
    let files = [
        "herald/events/v1/event.proto",
        "herald/webhooks/v1/webhook_spec.proto",
        "herald/deliveries/v1/delivery.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={root}/{file}");
    }
    let descriptors = protox::compile(files, [root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
