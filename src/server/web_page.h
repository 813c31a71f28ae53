#pragma once
// The web page of `controlnet serve` (src/server/web/index.html, embedded into
// the binary at build time so the server needs no files beside it).

namespace cn::server {

extern const char* const kWebPage;

}  // namespace cn::server
