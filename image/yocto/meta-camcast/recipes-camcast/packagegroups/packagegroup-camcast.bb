SUMMARY = "camcast and what it uses on the camera"
DESCRIPTION = "The camcast service and the kernel module of USB (UVC) cameras."
SECTION = "multimedia"
LICENSE = "MIT"

inherit packagegroup

RDEPENDS:${PN} = "camcast"
# USB (UVC) cameras; the Raspberry Pi's CSI cameras need libcamera and camcast's libcamera
# feature, which this layer does not build.
RRECOMMENDS:${PN} = "kernel-module-uvcvideo"
