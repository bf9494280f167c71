// The one compiled copy of stb_image (Debian libstb-dev, header-only): the image readers of
// engine/io/dataset_images.cpp, engine/dynamics/stimulus.cpp and
// models/retina/generator_stimulus.cpp call it. It lives in the io layer because reading an image
// file is file I/O; the layers above include <stb/stb_image.h> for the declarations only.
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO_OVERRIDE
#define STBI_FAILURE_USERMSG
#include <stb/stb_image.h>
