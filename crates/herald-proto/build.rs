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
    // A handful of headers: a B-tree is built without hashing, and keeps them in order.
    prost_build::Config::new()
        .btree_map([".herald.deliveries.v1.DeliveryOutcome.request_headers"])
        .compile_fds(descriptors)?;
    Ok(())
}
