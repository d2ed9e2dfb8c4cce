SUMMARY = "A small systemd image that runs camcast"
DESCRIPTION = "core-image-minimal plus camcast and OpenSSH, e.g. for MACHINE = \
               raspberrypi4-64 with meta-raspberrypi."
SECTION = "images"
LICENSE = "MIT"

inherit core-image features_check
REQUIRED_DISTRO_FEATURES = "systemd"

IMAGE_INSTALL = "packagegroup-core-boot packagegroup-camcast openssh ${CORE_IMAGE_EXTRA_INSTALL}"
