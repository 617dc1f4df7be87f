// <model-viewer> loads its meshopt decoder as a classic script that must leave a global
// MeshoptDecoder behind; three.js ships the decoder as a module only, so it is wrapped here.
import { MeshoptDecoder } from "three/examples/jsm/libs/meshopt_decoder.module.js";

window.MeshoptDecoder = MeshoptDecoder;
