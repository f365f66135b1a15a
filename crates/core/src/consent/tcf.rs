//! IAB TCF v2.2 / v2.3 TC strings (being written).
