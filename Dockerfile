# The image deploy/kubernetes runs: `make image` (docker or podman).
# Stage 1 builds on Debian bookworm with the build packages alone; stage 2 is
# bookworm-slim with the binaries and exactly the library packages they link
# (found with ldd + dpkg in stage 1), nothing else.
#
# The BPF programs are compiled against the build machine's kernel types
# (/sys/kernel/btf/vmlinux, visible in a build container) and relocated at
# load time (CO-RE), so the image runs on other kernels with BTF too.
FROM debian:bookworm AS build
# A library ldd cannot find, or dpkg cannot name the package of, fails the build.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY scripts/install-deps.sh scripts/
RUN bash scripts/install-deps.sh --build-only
COPY . .
ARG VERSION=unknown
RUN make -j"$(nproc)" DEPS_ARGS=--build-only VERSION="$VERSION" BUILD=/out \
      /out/sluiced /out/sluicectl /out/sluice-kube-sync \
 && for bin in sluiced sluicectl sluice-kube-sync; do ldd "/out/$bin"; done \
      | awk '/=> \// { print $3 }' | sort -u \
      | while read -r lib; do \
          dpkg -S "$lib" 2>/dev/null || dpkg -S "/usr$lib" 2>/dev/null || dpkg -S "${lib#/usr}" \
            || { echo "no package ships $lib" >&2; exit 1; }; \
        done | cut -d: -f1 | sort -u > /out/runtime-packages \
 && ! ldd /out/sluiced /out/sluicectl /out/sluice-kube-sync | grep -q 'not found' \
 && cat /out/runtime-packages

FROM debian:bookworm-slim
COPY --from=build /out/runtime-packages /tmp/runtime-packages
RUN apt-get update \
 && apt-get install -y --no-install-recommends $(cat /tmp/runtime-packages) \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages
COPY --from=build /out/sluiced /out/sluicectl /out/sluice-kube-sync /usr/local/bin/
# sluiced's admin and outbound ports (hostNetwork in the DaemonSet).
EXPOSE 15000 15001
ENTRYPOINT ["/usr/local/bin/sluiced"]
