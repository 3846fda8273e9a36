"""Object detection: SSDLite detectors, COCO mAP with a bootstrap interval, SSD decoding + NMS on the device."""
