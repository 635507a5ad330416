//! GPU-PV wire format and /dev/dxg ABI (being written).
