"""Camera producers: read a source, detect faces, publish 48x48 crops to the crops stream.

Modules: ``sources`` (webcams, files, network streams, image folders, labelled replay),
``faces`` (Haar detection and cropping), ``tracker`` (IoU track ids) and ``camera``
(the per-camera loop and the ``ProducerService``). OpenCV is imported only inside them,
never here, so importing the package stays cheap.
"""
