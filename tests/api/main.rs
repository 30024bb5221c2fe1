mod emulator;
mod sdk_conformance;
