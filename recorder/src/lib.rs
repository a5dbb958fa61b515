//! Capture: the recording iSCSI proxy, the DEXT capture shim's ring-buffer importer, ftrace and fio iolog importers, and synthesizers that produce the CDB streams of cp and fio.

#![deny(missing_docs)]
