
// ---- appended by the forge (guest-sdk/glue.rs); the method's source above is unchanged ----
#[doc(hidden)]
struct __BatosMethod;
impl batos_sdk::bindings::Guest for __BatosMethod {
    fn invoke(receiver: u64, args: String) -> Result<String, String> {
        batos_sdk::__invoke(receiver, &args, run)
    }
}
batos_sdk::bindings::export!(__BatosMethod with_types_in batos_sdk::bindings);
