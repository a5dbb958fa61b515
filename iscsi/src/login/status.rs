//! Login Response status (RFC 7143 §11.13.5): class and detail.

/// Status-Class and Status-Detail of a Login Response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoginStatus {
    /// 0 success, 1 redirection, 2 initiator error, 3 target error.
    pub class: u8,
    /// Detail within the class.
    pub detail: u8,
}

macro_rules! statuses {
    ($($name:ident = ($c:expr, $d:expr), $text:expr;)*) => {
        impl LoginStatus {
            $(#[doc = $text] pub const $name: LoginStatus = LoginStatus { class: $c, detail: $d };)*

            /// The RFC's description of this status.
            pub fn description(self) -> &'static str {
                match (self.class, self.detail) {
                    $(($c, $d) => $text,)*
                    _ => "unknown login status",
                }
            }
        }
    };
}

statuses! {
    SUCCESS = (0, 0), "Success";
    TARGET_MOVED_TEMPORARILY = (1, 1), "Target moved temporarily";
    INITIATOR_ERROR = (2, 0), "Initiator error (miscellaneous)";
    AUTHENTICATION_FAILURE = (2, 1), "Authentication failure";
    AUTHORIZATION_FAILURE = (2, 2), "Authorization failure";
    NOT_FOUND = (2, 3), "Target not found";
    TARGET_REMOVED = (2, 4), "Target removed";
    UNSUPPORTED_VERSION = (2, 5), "Unsupported version";
    TOO_MANY_CONNECTIONS = (2, 6), "Too many connections";
    MISSING_PARAMETER = (2, 7), "Missing parameter";
    CANT_INCLUDE_IN_SESSION = (2, 8), "Can't include in session";
    SESSION_TYPE_NOT_SUPPORTED = (2, 9), "Session type not supported";
    SESSION_DOES_NOT_EXIST = (2, 10), "Session does not exist";
    INVALID_DURING_LOGIN = (2, 11), "Invalid request during login";
    TARGET_ERROR = (3, 0), "Target error (miscellaneous)";
    SERVICE_UNAVAILABLE = (3, 1), "Service unavailable";
    OUT_OF_RESOURCES = (3, 2), "Out of resources";
}

impl std::fmt::Display for LoginStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (class {:#04x}, detail {:#04x})",
            self.description(),
            self.class,
            self.detail
        )
    }
}
