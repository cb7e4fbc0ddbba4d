// Enums shared with JavaScript are written once as X-macro lists, LIST(X) = X(A) X(B) ...: the
// enum, its member count and its names all come from the list, and the addon exports the names
// in code order (enums(), binding/runtime.cc), which a test compares with lib/'s enums.
#pragma once

#define LR_ENUM_MEMBER(name) name,
#define LR_ENUM_NAME(name) #name,
#define LR_ENUM_PLUS_ONE(name) +1
