//! The Sigma log sources and fields (Sysmon for Linux names) the sensor fills.

use std::borrow::Cow;

/// A supported `logsource` (product `linux`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Exec events.
    ProcessCreation,
    /// File writes, creations, renames and deletions.
    FileEvent,
    /// Outbound connects and inbound accepts.
    NetworkConnection,
}

/// Every field any category fills: a field is named by its index here once compiled.
pub const FIELDS: &[&str] = &[
    // The acting process's, in every category.
    "Image",
    "CommandLine",
    "CurrentDirectory",
    "User",
    "LogonId",
    "ProcessId",
    "ParentProcessId",
    "ParentImage",
    "ParentCommandLine",
    "ParentUser",
    // The event's own.
    "TargetFilename",
    "Initiated",
    "Protocol",
    "SourceIp",
    "SourcePort",
    "DestinationIp",
    "DestinationPort",
    "DestinationHostname",
];

/// Fields of the acting process, in every category: the first ten of [`FIELDS`].
const PROCESS: &[&str] = FIELDS.split_at(10).0;
/// A file event's own field, then a network connection's.
const FILE_EVENT: &[&str] = FIELDS.split_at(10).1.split_at(1).0;
const NETWORK_CONNECTION: &[&str] = FIELDS.split_at(11).1;

/// The index of a field in [`FIELDS`].
pub fn field_index(name: &str) -> Option<usize> {
    FIELDS.iter().position(|f| *f == name)
}

/// A log source this sensor has no events for: the rule is skipped as unsupported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogSourceError {
    #[error("product {0:?} is not supported (only linux)")]
    Product(String),
    #[error("log source category {0:?} is not supported")]
    Category(String),
    #[error("the log source has no category (service-based rules are not supported)")]
    NoCategory,
}

impl Category {
    pub fn from_logsource(
        product: Option<&str>,
        category: Option<&str>,
    ) -> Result<Self, LogSourceError> {
        if let Some(p) = product
            && p != "linux"
        {
            return Err(LogSourceError::Product(p.to_owned()));
        }
        match category {
            Some("process_creation") => Ok(Self::ProcessCreation),
            Some("file_event") => Ok(Self::FileEvent),
            Some("network_connection") => Ok(Self::NetworkConnection),
            Some(other) => Err(LogSourceError::Category(other.to_owned())),
            None => Err(LogSourceError::NoCategory),
        }
    }

    /// Whether the sensor fills `field` for this category.
    pub fn has_field(self, field: &str) -> bool {
        let own: &[&str] = match self {
            Self::ProcessCreation => &[],
            Self::FileEvent => FILE_EVENT,
            Self::NetworkConnection => NETWORK_CONNECTION,
        };
        PROCESS.contains(&field) || own.contains(&field)
    }
}

/// An event as Sigma sees it: a value per field name, absent when unknown.
pub trait SigmaFields {
    /// The log source this event belongs to, if any rule category covers it.
    fn category(&self) -> Option<Category>;
    fn field(&self, name: &str) -> Option<Cow<'_, str>>;
}

/// The Sigma log source of an event: execs are process creations; creating, writing or
/// renaming a file is a file event (Sysmon's FileCreate); connects and accepts over IP are
/// network connections. A UNIX socket is not one: Sysmon's NetworkConnect reports only TCP and
/// UDP, and rules written for it read a connect without an address as one to a remote host
/// (every bash that asks NSS for a user name would be a "reverse shell").
pub fn category_of(what: &crate::model::events::What) -> Option<Category> {
    use crate::model::events::What;
    match what {
        What::Exec { .. } => Some(Category::ProcessCreation),
        What::Open {
            write,
            create,
            truncate,
            ..
        } if *write || *create || *truncate => Some(Category::FileEvent),
        What::Rename { .. } => Some(Category::FileEvent),
        What::Connect { net } | What::Accept { net } if is_ip(net) => {
            Some(Category::NetworkConnection)
        }
        _ => None,
    }
}

fn is_ip(net: &crate::model::events::Net) -> bool {
    matches!(net.family.as_str(), "inet" | "inet6")
}

/// A published event with its process context, as Sigma fields.
pub struct EventFields<'a> {
    pub event: &'a crate::model::events::Event,
    /// The acting process's argv (for exec events it is in the event itself).
    pub argv: &'a [String],
    pub parent: Option<&'a crate::model::process_table::Process>,
    /// User names of the process's and its parent's effective uids.
    pub user: Option<&'a str>,
    pub parent_user: Option<&'a str>,
}

impl EventFields<'_> {
    fn net(&self) -> Option<(&crate::model::events::Net, bool)> {
        match &self.event.what {
            crate::model::events::What::Connect { net } => Some((net, true)),
            crate::model::events::What::Accept { net } => Some((net, false)),
            _ => None,
        }
    }
}

impl SigmaFields for EventFields<'_> {
    fn category(&self) -> Option<Category> {
        category_of(&self.event.what)
    }

    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        use crate::model::events::What;
        let e = self.event;
        let pid = e.pid;
        let proc_file = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).ok();
        Some(match name {
            "Image" => Cow::Borrowed(e.exe.as_deref()?),
            "CommandLine" => Cow::Owned(self.argv.join(" ")),
            "ProcessId" => Cow::Owned(pid.to_string()),
            "ParentProcessId" => Cow::Owned(e.ppid.to_string()),
            "User" => Cow::Borrowed(self.user?),
            "ParentImage" => Cow::Borrowed(self.parent?.exe.as_deref()?),
            "ParentCommandLine" => Cow::Owned(self.parent?.argv.join(" ")),
            "ParentUser" => Cow::Borrowed(self.parent_user?),
            // Read while the process lives; absent (no match) once it has gone.
            "CurrentDirectory" => Cow::Owned(
                std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .ok()?
                    .to_string_lossy()
                    .into_owned(),
            ),
            "LogonId" => Cow::Owned(proc_file("loginuid")?.trim().to_owned()),
            "TargetFilename" => match &e.what {
                What::Open { file, .. } | What::Unlink { file } | What::Chmod { file, .. } => {
                    Cow::Borrowed(file.path.as_deref()?)
                }
                What::Rename { to, .. } => Cow::Borrowed(to.path.as_deref()?),
                _ => return None,
            },
            "Initiated" => Cow::Borrowed(if self.net()?.1 { "true" } else { "false" }),
            "Protocol" => Cow::Borrowed(self.net()?.0.protocol.as_str()),
            "SourceIp" => Cow::Owned(self.net()?.0.local?.ip().to_string()),
            "SourcePort" => Cow::Owned(self.net()?.0.local?.port().to_string()),
            "DestinationIp" => Cow::Owned(self.net()?.0.remote?.ip().to_string()),
            "DestinationPort" => Cow::Owned(self.net()?.0.remote?.port().to_string()),
            // The sensor sees addresses, not the names they were looked up by.
            "DestinationHostname" => return None,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::events::{Net, What};

    fn connect(family: &str, unix_path: Option<&str>) -> What {
        What::Connect {
            net: Net {
                family: family.into(),
                protocol: "tcp".into(),
                local: None,
                remote: (family != "unix").then(|| "192.0.2.1:443".parse().expect("address")),
                unix_path: unix_path.map(Into::into),
            },
        }
    }

    #[test]
    fn only_ip_connects_are_network_connections() {
        assert_eq!(
            category_of(&connect("inet", None)),
            Some(Category::NetworkConnection)
        );
        assert_eq!(
            category_of(&connect("inet6", None)),
            Some(Category::NetworkConnection)
        );
        assert_eq!(
            category_of(&connect("unix", Some("/var/run/nscd/socket"))),
            None
        );
    }
}
