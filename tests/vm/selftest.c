/*
 * selftest.c — smoke test for the VM harness (tests/vm/run-in-vm.sh).
 *
 *   selftest [DEVICE [EXPECTED_DRIVER [CAPTURE_FRAMES [FPS]]]]
 *
 * Opens DEVICE (default /dev/video0), does VIDIOC_QUERYCAP and prints the
 * driver name. For a capture device it lists the pixel formats and the YUYV
 * frame sizes, and if CAPTURE_FRAMES > 0 streams that many 640x480 YUYV
 * frames with mmap I/O (at FPS frames/s if given, else the driver default —
 * 5 fps for vivid's webcam input).
 *
 * Exit status: 0 if the driver is EXPECTED_DRIVER (default "vivid") and, for
 * vivid, YUYV 640x480 and 1280x720 are offered and capture (if asked) worked;
 * 1 if the driver differs; 2 if formats/sizes are missing; 3 on capture
 * failure; 4 if the device cannot be opened/queried.
 *
 * Build: gcc -static -O2 -Wall -o selftest tests/vm/selftest.c
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static int xioctl(int fd, unsigned long req, void *arg)
{
    int r;
    do
        r = ioctl(fd, req, arg);
    while (r == -1 && errno == EINTR);
    return r;
}

static int capture(int fd, int frames, int fps)
{
    struct v4l2_format fmt = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
    fmt.fmt.pix.width = 640;
    fmt.fmt.pix.height = 480;
    fmt.fmt.pix.pixelformat = V4L2_PIX_FMT_YUYV;
    fmt.fmt.pix.field = V4L2_FIELD_NONE;
    if (xioctl(fd, VIDIOC_S_FMT, &fmt) < 0) {
        perror("VIDIOC_S_FMT");
        return 3;
    }
    printf("capture format: %ux%u sizeimage=%u\n", fmt.fmt.pix.width, fmt.fmt.pix.height,
           fmt.fmt.pix.sizeimage);
    struct v4l2_streamparm parm = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
    if (fps > 0) {
        parm.parm.capture.timeperframe.numerator = 1;
        parm.parm.capture.timeperframe.denominator = fps;
        if (xioctl(fd, VIDIOC_S_PARM, &parm) < 0)
            perror("VIDIOC_S_PARM");
    }
    if (xioctl(fd, VIDIOC_G_PARM, &parm) == 0)
        printf("frame interval: %u/%u s\n", parm.parm.capture.timeperframe.numerator,
               parm.parm.capture.timeperframe.denominator);

    struct v4l2_requestbuffers req = {.count = 4, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE,
                                      .memory = V4L2_MEMORY_MMAP};
    if (xioctl(fd, VIDIOC_REQBUFS, &req) < 0 || req.count < 2) {
        perror("VIDIOC_REQBUFS");
        return 3;
    }
    void *maps[8] = {0};
    unsigned n = req.count > 8 ? 8 : req.count;
    for (unsigned i = 0; i < n; i++) {
        struct v4l2_buffer b = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP,
                                .index = i};
        if (xioctl(fd, VIDIOC_QUERYBUF, &b) < 0) {
            perror("VIDIOC_QUERYBUF");
            return 3;
        }
        maps[i] = mmap(NULL, b.length, PROT_READ, MAP_SHARED, fd, b.m.offset);
        if (maps[i] == MAP_FAILED) {
            perror("mmap");
            return 3;
        }
        if (xioctl(fd, VIDIOC_QBUF, &b) < 0) {
            perror("VIDIOC_QBUF");
            return 3;
        }
    }
    enum v4l2_buf_type t = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    if (xioctl(fd, VIDIOC_STREAMON, &t) < 0) {
        perror("VIDIOC_STREAMON");
        return 3;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int f = 0; f < frames; f++) {
        struct v4l2_buffer b = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP};
        if (xioctl(fd, VIDIOC_DQBUF, &b) < 0) {
            perror("VIDIOC_DQBUF");
            return 3;
        }
        if (b.bytesused != fmt.fmt.pix.sizeimage) {
            fprintf(stderr, "frame %d: bytesused %u != %u\n", f, b.bytesused, fmt.fmt.pix.sizeimage);
            return 3;
        }
        if (xioctl(fd, VIDIOC_QBUF, &b) < 0) {
            perror("VIDIOC_QBUF");
            return 3;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    xioctl(fd, VIDIOC_STREAMOFF, &t);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("captured %d frames in %.2fs (%.1f fps)\n", frames, s, frames / s);
    return 0;
}

int main(int argc, char **argv)
{
    const char *dev = argc > 1 ? argv[1] : "/dev/video0";
    const char *want = argc > 2 ? argv[2] : "vivid";
    int frames = argc > 3 ? atoi(argv[3]) : 0;
    int fps = argc > 4 ? atoi(argv[4]) : 0;

    int fd = open(dev, O_RDWR);
    if (fd < 0) {
        fprintf(stderr, "open %s: %s\n", dev, strerror(errno));
        return 4;
    }
    struct v4l2_capability cap;
    memset(&cap, 0, sizeof cap);
    if (xioctl(fd, VIDIOC_QUERYCAP, &cap) < 0) {
        fprintf(stderr, "VIDIOC_QUERYCAP %s: %s\n", dev, strerror(errno));
        return 4;
    }
    unsigned caps = (cap.capabilities & V4L2_CAP_DEVICE_CAPS) ? cap.device_caps : cap.capabilities;
    printf("device: %s\ndriver: %s\ncard: %s\nbus_info: %s\ndevice_caps: 0x%08x%s%s\n", dev,
           (char *)cap.driver, (char *)cap.card, (char *)cap.bus_info, caps,
           (caps & V4L2_CAP_VIDEO_CAPTURE) ? " VIDEO_CAPTURE" : "",
           (caps & V4L2_CAP_VIDEO_OUTPUT) ? " VIDEO_OUTPUT" : "");

    int have640 = 0, have720 = 0;
    if (caps & V4L2_CAP_VIDEO_CAPTURE) {
        struct v4l2_fmtdesc fd_ = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
        printf("formats:");
        for (fd_.index = 0; xioctl(fd, VIDIOC_ENUM_FMT, &fd_) == 0; fd_.index++) {
            /* fourcc as text; bit 31 marks big-endian variants */
            unsigned f = fd_.pixelformat & ~(1u << 31);
            printf(" %c%c%c%c%s", f & 0xff, (f >> 8) & 0xff, (f >> 16) & 0xff, f >> 24,
                   (fd_.pixelformat >> 31) ? "-BE" : "");
        }
        printf("\nYUYV sizes:");
        struct v4l2_frmsizeenum fs = {.pixel_format = V4L2_PIX_FMT_YUYV};
        for (fs.index = 0; xioctl(fd, VIDIOC_ENUM_FRAMESIZES, &fs) == 0; fs.index++) {
            if (fs.type != V4L2_FRMSIZE_TYPE_DISCRETE) {
                printf(" (stepwise %u-%ux%u-%u)", fs.stepwise.min_width, fs.stepwise.max_width,
                       fs.stepwise.min_height, fs.stepwise.max_height);
                break;
            }
            printf(" %ux%u", fs.discrete.width, fs.discrete.height);
            have640 |= fs.discrete.width == 640 && fs.discrete.height == 480;
            have720 |= fs.discrete.width == 1280 && fs.discrete.height == 720;
        }
        printf("\n");
    }

    if (strcmp((char *)cap.driver, want) != 0) {
        printf("driver is \"%s\", expected \"%s\" -> exit 1\n", (char *)cap.driver, want);
        return 1;
    }
    if (strcmp(want, "vivid") == 0 && !(have640 && have720)) {
        printf("vivid lacks YUYV 640x480 or 1280x720 -> exit 2\n");
        return 2;
    }
    if (frames > 0) {
        int r = capture(fd, frames, fps);
        if (r)
            return r;
    }
    printf("OK: driver \"%s\"\n", want);
    close(fd);
    return 0;
}
