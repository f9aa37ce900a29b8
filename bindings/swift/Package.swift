// swift-tools-version:6.0
// The Swift package of dmdelegate: the uniffi-generated bindings of dmdelegate-uniffi.
//
// Sources/DMDelegate/DMDelegate.swift and Sources/DMDelegateFFI/include/ are generated from
// the compiled library (not committed): run scripts/swift-tests.sh, or see README.md.
// Link with the library's directory: swift build -Xlinker -L<dir of libdmdelegate_uniffi>.
import PackageDescription

let package = Package(
    name: "DMDelegate",
    platforms: [.macOS(.v10_15), .iOS(.v13)],
    products: [
        .library(name: "DMDelegate", targets: ["DMDelegate"]),
    ],
    targets: [
        // The C declarations of the library's scaffolding (DMDelegateFFI.h) and a module
        // map that links libdmdelegate_uniffi.
        .systemLibrary(name: "DMDelegateFFI", path: "Sources/DMDelegateFFI/include"),
        // The Swift API: DelegationServer, DelegationHost, DelegationError, the records...
        .target(name: "DMDelegate", dependencies: ["DMDelegateFFI"]),
        .testTarget(name: "DMDelegateTests", dependencies: ["DMDelegate"]),
    ]
)
